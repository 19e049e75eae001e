"""``BertPretrainingModel``: BERT with the masked-LM and next-sentence heads, in Keras 3.

It computes what Hugging Face ``BertForPreTraining`` computes from the same weights: post-LN
Transformer layers, learned positions, token types, an attention mask from ``input_mask``, a
masked-LM head whose decoder is the word-embedding matrix plus its own bias, a tanh pooler on
the first token and the 2-way NSP head. Only ``keras.ops`` is used, so the model runs on the
TensorFlow and the JAX backends (and imports no TensorFlow on JAX).

Example::

    config = BertConfig.from_preset("tiny", vocab_size=32000)
    model = BertPretrainingModel(config)
    outputs = model({"input_ids": ids, "input_mask": mask, "segment_ids": seg,
                     "masked_lm_positions": pos})
    outputs["mlm_logits"]  # [B, P, V]
    outputs["nsp_logits"]  # [B, 2]

Shape key: B batch, L sequence length, P predictions per sequence, H hidden, V vocabulary.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from trainer import distribute, kernels, losses
from trainer.config import BertConfig
from trainer.layers import BertEmbeddings, MaskedLMHead, TransformerLayer
from trainer.variables import to_numpy

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")
LABEL_NAMES = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


class BertPretrainingModel(keras.Model):
    """BERT encoder with MLM and NSP heads; ``call`` returns ``mlm_logits`` and ``nsp_logits``.

    The variables exist as soon as the model is constructed (no dummy call needed), so
    ``set_named_weights`` works at once, and under a distribution strategy's scope.

    ``kernel_options`` (``trainer.kernels``) choose the attention and dropout implementations
    on the JAX backend; they change speed and memory, not the function computed.

    ``compute_loss`` is the pretraining loss (MLM + NSP, or MLM only when
    ``config.use_nsp`` is false), so ``compile`` needs only an optimizer and ``fit`` takes
    ``(features, labels)`` with the ``LABEL_NAMES`` keys.

    ``gradient_accumulation_steps`` (default 1): with K > 1, each train step splits its batch
    into K micro-batches and applies the mean of their gradients once (``trainer.accumulation``);
    set it before ``compile``.
    """

    def __init__(self, config: BertConfig, kernel_options: kernels.KernelOptions | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.kernel_options = kernel_options or kernels.KernelOptions()
        self.kernel_options.check_backend()
        self.gradient_accumulation_steps = 1
        self.embeddings = BertEmbeddings(config, self.kernel_options, name="embeddings")
        self.encoder_layers = [
            TransformerLayer(config, self.kernel_options, name=f"encoder_layer_{i}")
            for i in range(config.num_hidden_layers)
        ]
        self.pooler = keras.layers.Dense(
            config.hidden_size,
            activation="tanh",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range),
            name="pooler",
        )
        self.mlm_head = MaskedLMHead(config, name="mlm")
        self.nsp_head = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range),
            name="nsp",
            dtype="float32",  # logits in float32 whatever the policy
        )
        if not config.use_nsp:
            # MLM only: the pooler and NSP head get no gradient; they are kept (and exported,
            # as in HF BertForPreTraining) but not trained.
            self.pooler.trainable = False
            self.nsp_head.trainable = False
        self.mlm_loss_metric = keras.metrics.Mean(name="mlm_loss")
        self.mlm_accuracy_metric = keras.metrics.Mean(name="mlm_accuracy")
        if config.use_nsp:
            self.nsp_loss_metric = keras.metrics.Mean(name="nsp_loss")
            self.nsp_accuracy_metric = keras.metrics.Mean(name="nsp_accuracy")
        self.build()

    def build(self, input_shape=None):
        h = self.config.hidden_size
        self.embeddings.build()
        for layer in self.encoder_layers:
            layer.build()
        self.pooler.build((None, h))
        self.mlm_head.build()
        self.nsp_head.build((None, h))
        self.built = True

    def encode(self, inputs: dict, training: bool = False) -> dict:
        """Runs the encoder; returns ``sequence_output`` [B, L, H] and ``pooled_output`` [B, H]."""
        input_ids = ops.cast(inputs["input_ids"], "int32")
        segment_ids = ops.cast(inputs["segment_ids"], "int32")
        # True where a key position holds a real token; broadcast over heads and queries.
        mask = ops.cast(inputs["input_mask"], "bool")[:, None, None, :]  # [B, 1, 1, L]
        x = self.embeddings(input_ids, segment_ids, training=training)
        residual = None
        for layer in self.encoder_layers:
            x, residual = layer(x, mask, training=training, residual=residual)
        pooled = self.pooler(x[:, 0, :])  # [B, H]
        return {"sequence_output": x, "pooled_output": pooled}

    def call(self, inputs: dict, training: bool = False) -> dict:
        encoded = self.encode(inputs, training=training)
        mlm_logits = self.mlm_head(
            encoded["sequence_output"],
            inputs["masked_lm_positions"],
            self.embeddings.word_embeddings.embeddings,
        )
        nsp_logits = self.nsp_head(encoded["pooled_output"])
        return {"mlm_logits": mlm_logits, "nsp_logits": ops.cast(nsp_logits, "float32")}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, sample_weight, training
        terms = losses.pretraining_losses(labels=y, outputs=y_pred, use_nsp=self.config.use_nsp)
        self.mlm_loss_metric.update_state(terms["mlm_losses"], sample_weight=terms["mlm_weights"])
        self.mlm_accuracy_metric.update_state(terms["mlm_correct"], sample_weight=terms["mlm_weights"])
        if self.config.use_nsp:
            examples = terms.get(losses.EXAMPLE_WEIGHTS)  # None in training: every example counts
            self.nsp_loss_metric.update_state(terms["nsp_losses"], sample_weight=examples)
            self.nsp_accuracy_metric.update_state(terms["nsp_correct"], sample_weight=examples)
        return terms["loss"]

    # Under MirroredStrategy with steps_per_execution > 1, the step loops of trainer.distribute.
    def make_train_function(self, force=False):
        if not distribute.mirrored_multi_step(self):
            return super().make_train_function(force)
        return self._mirrored_function("train_function", self.train_step, training=True, force=force)

    def make_test_function(self, force=False):
        if not distribute.mirrored_multi_step(self):
            return super().make_test_function(force)
        return self._mirrored_function("test_function", self.test_step, training=False, force=force)

    def _mirrored_function(self, attribute: str, step, *, training: bool, force: bool):
        if getattr(self, attribute) is None or force:
            setattr(self, attribute, distribute.mirrored_step_function(self, step, in_graph=training))
        return getattr(self, attribute)

    def train_step(self, *args):
        if self.gradient_accumulation_steps > 1:
            from trainer import accumulation

            return accumulation.train_step(self, self.gradient_accumulation_steps, *args)
        return super().train_step(*args)

    # Named weights: the export contract of docs/export_format.md.

    def named_variables(self) -> dict:
        """Maps every export name to its Keras variable (in a stable order)."""
        items = list(self.embeddings.named_variables("embeddings"))
        for i, layer in enumerate(self.encoder_layers):
            items += layer.named_variables(f"encoder/layer_{i}")
        items += [("pooler/kernel", self.pooler.kernel), ("pooler/bias", self.pooler.bias)]
        items += self.mlm_head.named_variables("mlm")
        items += [("nsp/kernel", self.nsp_head.kernel), ("nsp/bias", self.nsp_head.bias)]
        return dict(items)

    def named_weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.named_variables().items()}

    def get_named_weights(self) -> dict[str, np.ndarray]:
        """Every weight as a float32 numpy array under its export name."""
        return {name: to_numpy(v).astype(np.float32) for name, v in self.named_variables().items()}

    def set_named_weights(self, weights: dict) -> None:
        """Assigns every weight from ``weights`` (export name -> array).

        Raises:
            ValueError: listing missing, unexpected and wrongly shaped names; nothing is
                assigned then.
        """
        variables = self.named_variables()
        missing = sorted(set(variables) - set(weights))
        unexpected = sorted(set(weights) - set(variables))
        mismatched = [
            f"{name}: expected {tuple(v.shape)}, got {tuple(np.shape(weights[name]))}"
            for name, v in variables.items()
            if name in weights and tuple(np.shape(weights[name])) != tuple(v.shape)
        ]
        if missing or unexpected or mismatched:
            problems = []
            if missing:
                problems.append(f"missing {len(missing)}: {missing}")
            if unexpected:
                problems.append(f"unexpected {len(unexpected)}: {unexpected}")
            if mismatched:
                problems.append(f"shape mismatch {len(mismatched)}: {mismatched}")
            raise ValueError("named weights do not fit the model: " + "; ".join(problems))
        for name, variable in variables.items():
            variable.assign(np.asarray(weights[name], dtype=variable.dtype))

    def get_config(self):
        return {"bert_config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(BertConfig.from_dict(config["bert_config"]), name=config.get("name"))
