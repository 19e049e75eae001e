"""Run as a script under KERAS_BACKEND=jax (CPU): the whole tiny ``BertPretrainingModel`` in
mixed_bfloat16 with ``KernelOptions(pallas=PALLAS_KINDS)`` (the kernels interpreted) and
without, and in float32 without, on the same weights, batch and dropout seeds: the pretraining
loss and every trainable variable's gradient. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.pallas_model_run
"""

from __future__ import annotations

import json

import jax
import keras
import numpy as np

from trainer import losses
from trainer.bert_model import BertPretrainingModel
from trainer.config import PALLAS_KINDS, BertConfig, KernelOptions
from trainer.data_spec import DataSpec
from trainer.synthetic import synthetic_batches


def gradients(policy: str, kinds: tuple, batch) -> tuple[float, dict]:
    """The loss and each trainable variable's gradient (by path) of a model built under
    ``policy`` with ``kinds`` of Pallas kernels, from seed 0."""
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=97, max_position_embeddings=64)
    model = BertPretrainingModel(config, KernelOptions(attention="xla", dropout_rng="hash", pallas=kinds))
    features, labels = batch
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        outputs, _ = model.stateless_call(trainable, non_trainable, features, training=True)
        return losses.pretraining_losses(labels=labels, outputs=outputs, use_nsp=True)["loss"]

    value, grads = jax.value_and_grad(loss)(trainable)
    names = [v.path.split("/", 1)[1] for v in model.trainable_variables]  # without the model's own name
    return float(value), {n: np.asarray(g, np.float64) for n, g in zip(names, grads, strict=True)}


def relative(got, want) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def main() -> None:
    from trainer import pallas

    spec = DataSpec(
        train_pattern="", eval_pattern="", max_seq_length=32, max_predictions_per_seq=5, vocab_size=97, nsp=True,
        source="--synthetic_data",
    )  # fmt: skip
    batch = next(synthetic_batches(spec, batch_size=8, vocab_size=97, seed=3))
    xla_loss, xla = gradients("mixed_bfloat16", (), batch)
    fused_loss, fused = gradients("mixed_bfloat16", PALLAS_KINDS, batch)
    exact_loss, exact = gradients("float32", (), batch)
    print(
        "RESULT "
        + json.dumps(
            {
                "losses": {"xla": xla_loss, "pallas": fused_loss, "float32": exact_loss},
                "traced": pallas.traced(),
                "variables": sorted(xla) == sorted(fused) == sorted(exact) and len(xla),
                # each gradient's largest difference from the float32 model's, relative to its largest value
                "against_float32": {
                    n: [relative(xla[n], exact[n]), relative(fused[n], exact[n])] for n in xla
                },
            }
        )
    )


if __name__ == "__main__":
    main()
