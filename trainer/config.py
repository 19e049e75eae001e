"""Model and training configurations: frozen dataclasses validated on construction.

``BertConfig`` has exactly the keys of ``bert_config.json`` (docs/export_format.md) and
round-trips to JSON; ``PRESETS`` names the sizes from BERT-tiny to BERT-large.
``TrainConfig`` holds the training options that ``trainer.task`` reads from its flags.

No TensorFlow or Keras import at module level: the config is read on machines that have
neither (the converter, the JAX GPU benchmark).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from trainer import fileio

HIDDEN_ACTS = ("gelu", "gelu_new")
OPTIMIZERS = ("adamw", "lamb")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DATA_RESUME_MODES = ("reshuffle", "skip")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
DROPOUT_RNGS = ("auto", "keras", "rbg", "hash")
PALLAS_KINDS = ("norm", "ffn", "attention")


def pallas_kinds(text: str) -> tuple[str, ...]:
    """``--pallas_kernels``: ``none``, ``all`` or a comma-separated list of ``PALLAS_KINDS``, as
    the kinds in ``PALLAS_KINDS`` order; a ValueError naming the flag otherwise."""
    text = text.strip()
    if text in ("", "none"):
        return ()
    if text == "all":
        return PALLAS_KINDS
    named = [part.strip() for part in text.split(",")]
    unknown = [part for part in named if part not in PALLAS_KINDS]
    _check(
        not unknown,
        f"--pallas_kernels {text!r}: {', '.join(map(repr, unknown))} not among {PALLAS_KINDS} "
        "(auto, none and all stand alone)",
    )
    return tuple(kind for kind in PALLAS_KINDS if kind in named)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters, the keys of google-research/bert's ``bert_config.json`` plus ``use_nsp``.

    Attributes:
        vocab_size: rows of the word-embedding matrix (length of ``vocab.txt``).
        hidden_size: width H of every layer.
        num_hidden_layers: number of Transformer layers.
        num_attention_heads: heads per layer; must divide ``hidden_size``.
        intermediate_size: width I of the feed-forward layer.
        hidden_act: ``"gelu"`` (exact erf) or ``"gelu_new"`` (tanh approximation).
        hidden_dropout_prob: dropout after embeddings and every sub-layer.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: rows of the learned position table.
        type_vocab_size: number of token types (segments).
        initializer_range: stddev of the truncated-normal initializer.
        layer_norm_eps: epsilon of every LayerNorm.
        use_nsp: whether the NSP head is trained (its weights exist either way).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    use_nsp: bool = True

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"BertConfig.{name} must be a positive integer, got {value!r}",
            )
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
            f"num_attention_heads={self.num_attention_heads}",
        )
        _check(
            self.hidden_act in HIDDEN_ACTS,
            f"BertConfig.hidden_act={self.hidden_act!r} is not supported; choose from {HIDDEN_ACTS}",
        )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            _check(
                isinstance(value, (int, float)) and 0.0 <= value < 1.0,
                f"BertConfig.{name} must be in [0, 1), got {value!r}",
            )
        _check(
            isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0,
            f"BertConfig.initializer_range must be > 0, got {self.initializer_range!r}",
        )
        _check(
            isinstance(self.layer_norm_eps, (int, float)) and 0 < self.layer_norm_eps < 1,
            f"BertConfig.layer_norm_eps must be in (0, 1), got {self.layer_norm_eps!r}",
        )
        _check(isinstance(self.use_nsp, bool), f"BertConfig.use_nsp must be a bool, got {self.use_nsp!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Builds a config from a dict; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BertConfig key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str) -> None:
        """Writes the config as JSON (local path or ``gs://``), atomically."""
        fileio.write_text_atomic(path, self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str) -> BertConfig:
        """Reads a config written by ``to_json_file`` (local path or ``gs://``)."""
        try:
            values = json.loads(fileio.read_text(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BertConfig:
        """Returns the named preset (see ``PRESETS``) with ``overrides`` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


def _small_bert(layers: int, hidden: int) -> BertConfig:
    # Turc et al. (2019) small BERTs: 64-wide heads, feed-forward 4H.
    return BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
    )


#: Named model sizes. ``L{layers}_H{hidden}`` is the grid of Turc et al. "Well-Read Students
#: Learn Better" (L in 2..12, H in 128..768); tiny/mini/small/medium are its named points,
#: ``base`` and ``large`` the original BERT sizes.
PRESETS: dict[str, BertConfig] = {
    f"L{layers}_H{hidden}": _small_bert(layers, hidden)
    for layers in (2, 4, 6, 8, 10, 12)
    for hidden in (128, 256, 512, 768)
}
PRESETS.update(
    tiny=PRESETS["L2_H128"],
    mini=PRESETS["L4_H256"],
    small=PRESETS["L4_H512"],
    medium=PRESETS["L8_H512"],
    base=PRESETS["L12_H768"],
    large=BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training options (what ``trainer.task`` takes from its flags).

    Attributes:
        batch_size: global batch size of one optimizer update, summed over every replica and host.
        gradient_accumulation_steps: micro-batches per update (``trainer.accumulation``): each
            replica's share of the batch runs in this many pieces, one after the other, and the
            mean of their gradients is applied once; 1 runs the batch whole.
        train_steps: optimizer steps in total (a resumed job counts from its checkpoint).
        learning_rate: peak learning rate, reached after ``warmup_steps``.
        warmup_steps: linear warmup from 0; then linear decay to ``end_learning_rate``.
        end_learning_rate: learning rate at ``train_steps``.
        optimizer: ``"adamw"`` or ``"lamb"``.
        weight_decay: decoupled weight decay (never on LayerNorm or bias).
        beta_1, beta_2, epsilon: Adam moments and epsilon.
        clip_norm: global-norm gradient clipping (0 disables it).
        precision: Keras dtype policy name.
        jit_compile: XLA-compile the train step.
        steps_per_execution: optimizer steps per compiled call (TensorFlow); on JAX, Keras runs
            them as a loop of one-step calls between callbacks.
        checkpoint_every: steps between checkpoints (a multiple of ``steps_per_execution``).
        keep_checkpoints: how many recent checkpoints to keep.
        eval_every: steps between evaluations (0: only at the end).
        eval_steps: batches per evaluation (0: the whole validation split).
        log_every: steps between progress lines (a multiple of ``steps_per_execution``).
        seed: seed for initialization, dropout and data order.
        data_resume: ``"reshuffle"`` (a resumed job reads a fresh shuffle of the data) or
            ``"skip"`` (it skips the records the first run consumed: an exact continuation,
            at the cost of reading them again).
    """

    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    train_steps: int = 1000
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    end_learning_rate: float = 0.0
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-6
    clip_norm: float = 1.0
    precision: str = "float32"
    jit_compile: bool = True
    steps_per_execution: int = 1
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_steps: int = 0
    log_every: int = 100
    seed: int = 12345
    data_resume: str = "reshuffle"

    def __post_init__(self):
        _check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _check(
            self.gradient_accumulation_steps >= 1,
            f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}",
        )
        _check(
            self.batch_size % self.gradient_accumulation_steps == 0,
            f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps "
            f"{self.gradient_accumulation_steps}",
        )
        _check(self.train_steps >= 0, f"train_steps must be >= 0, got {self.train_steps}")
        _check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate must be > 0, got {self.learning_rate}",
        )
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.end_learning_rate >= 0, f"end_learning_rate must be >= 0, got {self.end_learning_rate}")
        _check(self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} not in {OPTIMIZERS}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(
            0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1,
            f"betas must be in [0, 1): {self.beta_1}, {self.beta_2}",
        )
        _check(self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")
        _check(self.clip_norm >= 0, f"clip_norm must be >= 0, got {self.clip_norm}")
        _check(self.precision in PRECISIONS, f"precision {self.precision!r} not in {PRECISIONS}")
        _check(
            self.steps_per_execution >= 1, f"steps_per_execution must be >= 1, got {self.steps_per_execution}"
        )
        _check(
            self.train_steps % self.steps_per_execution == 0,
            f"train_steps={self.train_steps} must be a multiple of steps_per_execution={self.steps_per_execution}",
        )
        for name in ("checkpoint_every", "log_every"):
            value = getattr(self, name)
            _check(value >= 1, f"{name} must be >= 1, got {value}")
            _check(
                value % self.steps_per_execution == 0,
                f"{name}={value} must be a multiple of steps_per_execution={self.steps_per_execution} "
                "(the host sees the model only between executions)",
            )
        _check(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        _check(
            self.eval_every % self.steps_per_execution == 0,
            f"eval_every={self.eval_every} must be a multiple of steps_per_execution={self.steps_per_execution}",
        )
        _check(self.eval_steps >= 0, f"eval_steps must be >= 0, got {self.eval_steps}")
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        _check(
            self.data_resume in DATA_RESUME_MODES,
            f"data_resume {self.data_resume!r} not in {DATA_RESUME_MODES}",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """How attention and dropout masks are computed (``trainer.kernels``); not part of the model.

    Attributes:
        attention: ``"auto"``, ``"xla"`` or ``"cudnn"`` (``--attention_impl``).
        dropout_rng: ``"auto"`` (``hash`` on JAX, ``keras`` on TensorFlow), ``"keras"``,
            ``"rbg"`` or ``"hash"`` (``--dropout_rng``).
        pallas: which parts of each layer run in the Pallas kernels of ``trainer.pallas``
            (``--pallas_kernels``): some of ``PALLAS_KINDS``, none by default.
    """

    attention: str = "auto"
    dropout_rng: str = "auto"
    pallas: tuple[str, ...] = ()

    def __post_init__(self):
        _check(
            self.attention in ATTENTION_IMPLS,
            f"--attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention!r}",
        )
        _check(
            self.dropout_rng in DROPOUT_RNGS,
            f"--dropout_rng must be one of {DROPOUT_RNGS}, got {self.dropout_rng!r}",
        )
        _check(
            isinstance(self.pallas, tuple) and set(self.pallas) <= set(PALLAS_KINDS),
            f"--pallas_kernels must name some of {PALLAS_KINDS}, got {self.pallas!r}",
        )

    def dropout_for(self, backend: str) -> str:
        """The dropout generator this run uses: ``auto`` is ``hash`` on JAX, ``keras`` elsewhere."""
        if self.dropout_rng != "auto":
            return self.dropout_rng
        return "hash" if backend == "jax" else "keras"

    def check_backend(self, backend: str | None = None) -> None:
        """Refuses a choice the Keras backend cannot honour (``cudnn``, ``rbg``, ``hash`` need JAX)."""
        if backend is None:
            import keras

            backend = keras.backend.backend()
        if backend == "jax":
            return
        _check(self.attention != "cudnn", f"--attention_impl cudnn needs KERAS_BACKEND=jax, not {backend}")
        _check(
            self.dropout_rng in ("auto", "keras"),
            f"--dropout_rng {self.dropout_rng} needs KERAS_BACKEND=jax, not {backend}",
        )
        _check(
            not self.pallas,
            f"--pallas_kernels {','.join(self.pallas)} needs KERAS_BACKEND=jax, not {backend}",
        )
