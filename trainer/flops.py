"""FLOPs of one BERT pretraining step and model FLOPs utilisation (MFU).

Pure Python (no TensorFlow, Keras or JAX import), so that benchmarks on machines without TensorFlow
can use it.

What is counted: the matrix products of the model, 2 FLOPs per multiply-add, the way MFU is usually
reported (PaLM, MaxText, Megatron). Softmax, GELU, LayerNorm, dropout, embedding gathers and the
optimizer update are left out: together they are a few percent of the total for BERT sizes. A
training step costs three forward passes (the backward pass computes the gradients of both the
activations and the weights: twice the forward's products).

Per example, with sequence length L, P masked positions, hidden size H, intermediate size I,
N layers and vocabulary V, the forward pass does:

- per layer: Q, K, V and the attention output projection, 4 * 2*L*H*H; the attention scores
  (Q K^T over all heads) 2*L*L*H and the weighted sum of values 2*L*L*H; the feed-forward
  block, 2 * 2*L*H*I;
- the MLM head on the P masked positions only: the transform 2*P*H*H and the tied decoder
  2*P*H*V (the model gathers the masked positions before the head; a model that scores every
  position, as Hugging Face ``BertForPreTraining`` does, executes L/P times more here);
- the NSP head (when present): the pooler 2*H*H on [CLS] and the classifier 2*H*2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Dense (no sparsity) peak rates in FLOP/s per chip for the precision a BERT step runs in
# (bf16 on GPUs and TPUs). Vendor datasheet figures.
PEAK_FLOPS: dict[str, float] = {
    "h100": 989e12,  # H100 SXM, bf16 dense
    "h100-pcie": 756e12,
    "h200": 989e12,  # same chip as the H100 SXM, faster memory
    "a100": 312e12,
    "tpu-v2": 45e12,  # per chip (2 TensorCores, which JAX and TF show as 2 devices)
    "tpu-v3": 123e12,  # per chip (2 TensorCores, shown as 2 devices)
    "tpu-v4": 275e12,  # per chip (one device: the 2 TensorCores act as one)
    "tpu-v5e": 197e12,
    "tpu-v5p": 459e12,
    "tpu-v6e": 918e12,
}


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """The sizes that decide a BERT's FLOPs.

    Attributes:
        hidden_size: H.
        num_hidden_layers: N.
        intermediate_size: I.
        vocab_size: V.
        use_nsp: whether the pooler and NSP head run.
    """

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    use_nsp: bool = True

    def __post_init__(self):
        for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelDims.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """Reads the sizes off a ``trainer.config.BertConfig`` (or any object with those fields)."""
        return cls(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            use_nsp=bool(getattr(config, "use_nsp", True)),
        )


def forward_flops_per_example(
    dims: ModelDims, *, seq_length: int, max_predictions: int, mlm_positions: int | None = None
) -> dict[str, int]:
    """Forward-pass matrix-product FLOPs of one example, by part.

    Args:
        dims: the model's sizes.
        seq_length: L, the padded sequence length.
        max_predictions: P, the masked positions per example the MLM head scores.
        mlm_positions: positions the MLM head actually runs on; defaults to ``max_predictions``.
            Pass ``seq_length`` to count a model that scores every position.

    Returns:
        ``{"encoder", "attention", "mlm_head", "nsp_head", "total"}``: ``encoder`` is the
        projections and feed-forward blocks of all layers, ``attention`` the score and value
        products of all layers.
    """
    if seq_length <= 0 or max_predictions < 0:
        raise ValueError(
            f"seq_length must be > 0 and max_predictions >= 0, got {seq_length}, {max_predictions}"
        )
    h, n, i, v, seq = (
        dims.hidden_size,
        dims.num_hidden_layers,
        dims.intermediate_size,
        dims.vocab_size,
        seq_length,
    )
    p = max_predictions if mlm_positions is None else mlm_positions
    encoder = n * (4 * 2 * seq * h * h + 2 * 2 * seq * h * i)
    attention = n * (2 * 2 * seq * seq * h)
    mlm_head = 2 * p * h * h + 2 * p * h * v
    nsp_head = (2 * h * h + 2 * h * 2) if dims.use_nsp else 0
    total = encoder + attention + mlm_head + nsp_head
    return {
        "encoder": encoder,
        "attention": attention,
        "mlm_head": mlm_head,
        "nsp_head": nsp_head,
        "total": total,
    }


def train_step_flops(
    dims: ModelDims,
    *,
    batch_size: int,
    seq_length: int,
    max_predictions: int,
    mlm_positions: int | None = None,
) -> int:
    """Matrix-product FLOPs of one training step (forward + backward) on a global batch.

    Args:
        dims: the model's sizes.
        batch_size: global batch size B.
        seq_length: L.
        max_predictions: P.
        mlm_positions: see ``forward_flops_per_example``.

    Returns:
        3 * B * the forward FLOPs of one example.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    forward = forward_flops_per_example(
        dims, seq_length=seq_length, max_predictions=max_predictions, mlm_positions=mlm_positions
    )["total"]
    return 3 * batch_size * forward


def peak_flops(device: str) -> float:
    """Peak FLOP/s of one chip of a known kind (``PEAK_FLOPS``'s keys, case-insensitive).

    Raises:
        ValueError: for an unknown device, listing the known ones.
    """
    key = device.strip().lower()
    if key not in PEAK_FLOPS:
        raise ValueError(
            f"unknown device {device!r} for the peak FLOP/s table; known: {', '.join(sorted(PEAK_FLOPS))} "
            "(give the peak explicitly for anything else)"
        )
    return PEAK_FLOPS[key]


def guess_device_kind(name: str) -> str | None:
    """Maps a device name as a framework reports it (``NVIDIA H100 80GB HBM3``, ``TPU v4``) to a key.

    Returns:
        A key of ``PEAK_FLOPS``, or None when the name is not recognised.
    """
    low = name.lower()
    if "h200" in low:
        return "h200"
    if "h100" in low:
        return "h100-pcie" if "pcie" in low else "h100"
    if "a100" in low:
        return "a100"
    if "tpu" not in low:
        return None
    # JAX names: "TPU v6 lite" (v6e), "TPU v5 lite" (v5e), "TPU v5" or "TPU v5p", "TPU v4";
    # "TPU v4 lite" (v4i) has a peak of its own, not in the table.
    if "v4 lite" in low or "v4lite" in low:
        return None
    names = {"v6e": "tpu-v6e", "v6 lite": "tpu-v6e", "v6lite": "tpu-v6e", "v5p": "tpu-v5p", "v5e": "tpu-v5e",
             "v5 lite": "tpu-v5e", "v5lite": "tpu-v5e", "v5": "tpu-v5p", "v4": "tpu-v4", "v3": "tpu-v3",
             "v2": "tpu-v2"}  # fmt: skip
    return next((key for part, key in names.items() if part in low), None)


def device_peak_flops(device_name: str) -> float | None:
    """Peak FLOP/s of one device as a framework counts devices, from its name (``guess_device_kind``):
    a chip's peak, but half of it on TPU v2 and v3, whose chips show as two devices (one per
    TensorCore). None when the name is not recognised."""
    kind = guess_device_kind(device_name)
    if kind is None:
        return None
    return PEAK_FLOPS[kind] / (2 if kind in ("tpu-v2", "tpu-v3") else 1)


def mfu(
    *, flops_per_step: float, step_time_s: float, peak_flops_per_device: float, num_devices: int = 1
) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices used.

    Args:
        flops_per_step: FLOPs of one global step (``train_step_flops``).
        step_time_s: seconds per step.
        peak_flops_per_device: peak FLOP/s of one device.
        num_devices: devices the step runs on.

    Returns:
        A fraction (0.5 means 50%).
    """
    if step_time_s <= 0 or peak_flops_per_device <= 0 or num_devices <= 0:
        raise ValueError(
            f"step_time_s, peak_flops_per_device and num_devices must be > 0, got "
            f"{step_time_s}, {peak_flops_per_device}, {num_devices}"
        )
    return flops_per_step / step_time_s / (peak_flops_per_device * num_devices)
