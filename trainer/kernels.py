"""Kernel choices for the JAX backend: cuDNN fused attention with dropout, cheaper dropout bits.

Two choices, both runtime options (``trainer.config.KernelOptions``), never part of the model
or its export:

- ``attention``: ``xla`` computes attention with ``keras.ops`` (scores, softmax, and with
  attention dropout the probabilities materialised as a [B, N, L, L] array, forward and
  backward). ``cudnn`` calls cuDNN's fused (flash) attention through JAX, with the dropout
  on the probabilities inside the kernel: nothing of size [B, N, L, L] is kept for the backward
  pass. ``auto`` (the default) takes ``cudnn`` on the JAX backend on an NVIDIA GPU with bf16 or
  fp16 activations, and ``xla`` everywhere else or when JAX refuses the shapes.
- ``dropout_rng``: ``keras`` draws dropout masks (hidden states, and attention probabilities
  when XLA computes attention) with Keras' random ops (JAX's default Threefry generator on
  JAX). ``rbg`` draws them on JAX from XLA's RngBitGenerator
  (Philox on GPUs), fewer integer operations per random word. The bits of an ``rbg`` mask
  are generated for the global array on every device, so it suits one accelerator; ``keras``
  stays the default.

cuDNN's dropout takes a fixed seed per call site; XLA advances the generator's offset at every
execution, so the masks differ from step to step, and each layer gets its own seed
(``Dropout.static_seed``, the initial seed of that layer's Keras seed generator). A restarted
job starts that offset again at 0: its attention-dropout masks repeat those of the first run's
first steps (on other batches), while every other random draw follows Keras' seed state.

Shape key: B batch, L sequence length, N heads, D head size.
"""

from __future__ import annotations

import logging
import random

import keras

from trainer.config import KernelOptions

log = logging.getLogger(__name__)

_CUDNN_DTYPES = ("bfloat16", "float16")


def _jax_on_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


_logged: set[str] = set()


def _log_once(level: int, message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.log(level, message)


def cudnn_attention(q, k, v, mask, *, scale: float, dropout_rate: float, seed: int):
    """cuDNN fused attention, dropout on the probabilities inside the kernel (JAX only).

    Args:
        q, k, v: [B, L, N, D], bf16 or fp16.
        mask: bool [B, 1, L, L], True where a query may attend a key.
        scale: multiplies the scores (1/sqrt(D) for BERT).
        dropout_rate: attention-probability dropout (0 in evaluation).
        seed: static seed of this call site's dropout.

    Returns:
        The context [B, L, N, D].

    Raises:
        NotImplementedError, RuntimeError or ValueError: from JAX, when cuDNN is absent or the
            shapes, dtype or GPU are not supported.
    """
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa

    return cudnn_fa.dot_product_attention(
        q,
        k,
        v,
        mask=mask,
        scale=scale,
        dropout_rate=float(dropout_rate),
        seed=int(seed),
        qkv_layout="BTNH",
    )


def use_cudnn_attention(options: KernelOptions, dtype) -> bool:
    """Whether a layer with activations of ``dtype`` should try ``cudnn_attention`` now."""
    if options.attention == "xla" or keras.backend.backend() != "jax":
        return False
    if options.attention == "cudnn":
        return True
    return keras.backend.standardize_dtype(dtype) in _CUDNN_DTYPES and _jax_on_gpu()


def attention_or_none(options: KernelOptions, q, k, v, mask, *, scale: float, dropout_rate: float, seed: int):
    """``cudnn_attention`` when ``options`` choose it; None when the caller must use XLA.

    With ``attention="auto"`` a refusal from JAX (unsupported shape, dtype, GPU, no cuDNN, or
    another signature in another JAX version) is logged once and answered with None; with
    ``"cudnn"`` it propagates.
    """
    if not use_cudnn_attention(options, q.dtype):
        return None
    try:
        context = cudnn_attention(q, k, v, mask, scale=scale, dropout_rate=dropout_rate, seed=seed)
    # TypeError and AttributeError too: the cuDNN entry point is JAX-internal and may change.
    except (NotImplementedError, RuntimeError, ValueError, ImportError, TypeError, AttributeError) as e:
        if options.attention == "cudnn":
            raise
        _log_once(logging.WARNING, f"cuDNN fused attention not available ({e}); attention runs in XLA")
        return None
    _log_once(logging.INFO, "attention: cuDNN fused attention (dropout inside the kernel)")
    return context


def rbg_dropout(x, rate: float, seed):
    """Dropout of ``x`` with a mask from XLA's RngBitGenerator (JAX only).

    Args:
        x: any array.
        rate: fraction dropped, in [0, 1).
        seed: uint32[2] (a Keras ``SeedGenerator`` draw).

    Returns:
        ``x / (1 - rate)`` where kept, 0 elsewhere; same shape and dtype as ``x``.
    """
    import jax
    import jax.numpy as jnp

    keep = 1.0 - rate
    seed = jnp.asarray(seed).astype(jnp.uint32)
    # The generator's state is 4 words; the second pair is the first one scrambled.
    state = jnp.concatenate([seed, seed ^ jnp.uint32(0x9E3779B9)])
    _, bits = jax.lax.rng_bit_generator(state, x.shape, dtype=jnp.uint32)
    threshold = min(round(keep * 2**32), 2**32 - 1)  # P(bits < threshold) = keep, to 2^-32
    kept = bits < jnp.uint32(threshold)
    return jnp.where(kept, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` that draws its mask with ``rbg_dropout`` when options say so."""

    def __init__(self, rate: float, options: KernelOptions, seed: int | None = None, **kwargs):
        if seed is None and rate > 0:
            # The draw Keras' SeedGenerator would make (so initial weights and every other
            # seed stay as with keras.layers.Dropout), made here to know its value.
            seed = random.randint(1, int(1e9))
        super().__init__(rate, seed=seed, **kwargs)
        self.options = options
        self.static_seed = seed or 0  # for cuDNN attention dropout, a Python int

    def call(self, inputs, training=False):
        if training and self.rate > 0 and self.options.dropout_rng == "rbg":
            return rbg_dropout(inputs, self.rate, self.seed_generator.next())
        return super().call(inputs, training=training)
