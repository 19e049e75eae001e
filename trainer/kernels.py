"""Kernel choices for the JAX backend: cuDNN fused attention with dropout, cheaper dropout bits.

Two choices, both runtime options (``trainer.config.KernelOptions``), never part of the model
or its export (a third, ``pallas``, puts parts of each layer in Pallas kernels: ``trainer.pallas``,
checked by ``resolve``):

- ``attention``: ``xla`` computes attention with ``keras.ops`` (scores, softmax, and with
  attention dropout the probabilities materialised as a [B, N, L, L] array, forward and
  backward). ``cudnn`` calls cuDNN's fused (flash) attention through JAX, with the dropout
  on the probabilities inside the kernel: nothing of size [B, N, L, L] is kept for the backward
  pass. ``auto`` (the default) takes ``cudnn`` on the JAX backend on one NVIDIA GPU of compute
  capability 8.0 or later with bf16 or fp16 activations (``auto_refusal``), and ``xla``
  everywhere else; ``trainer.task`` settles ``auto`` before building the model (``resolve``),
  compiling a small cuDNN forward and backward first, since cuDNN refuses some cases only at
  compile time. A layer left with ``auto`` falls back to XLA when JAX refuses at trace time.
- ``dropout_rng``: ``keras`` draws dropout masks (hidden states, and attention probabilities
  when XLA computes attention) with Keras' random ops (JAX's default Threefry generator on
  JAX). ``rbg`` draws them on JAX from XLA's RngBitGenerator
  (Philox on GPUs), fewer integer operations per random word. The bits of an ``rbg`` mask
  are generated for the global array on every device, so it suits one accelerator.
  ``hash`` computes each element's random word as a hash of its position and the layer's
  seed (``hash_dropout``): a few integer operations that XLA fuses into the kernel that
  applies the mask, so no generator kernel runs, and the backward pass needs only the seed
  (XLA may still keep a mask it computed, as a 1-byte array, where it judges that cheaper);
  it is a pure function of the global position, so every device
  computes only its own rows. ``auto`` (the default) is ``hash`` on JAX and ``keras`` on
  TensorFlow, which has none of the others.

cuDNN's dropout takes a fixed seed per call site; XLA advances the generator's offset at every
execution, so the masks differ from step to step, and each layer gets its own seed
(``Dropout.static_seed``, the initial seed of that layer's Keras seed generator). A restarted
job starts that offset again at 0: its attention-dropout masks repeat those of the first run's
first steps (on other batches), while every other random draw follows Keras' seed state. On
several devices each would draw the same masks for its rows, hence ``auto`` keeps XLA there
(``cudnn`` forced on a mesh accepts that).

Either choice computes the same function of the weights up to rounding (cuDNN keeps the
probabilities in float32 inside the kernel, XLA rounds them to the activation dtype) and up to
which random bits drop what.

Shape key: B batch, L sequence length, N heads, D head size.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random

import keras

from trainer.config import KernelOptions

log = logging.getLogger(__name__)

_CUDNN_DTYPES = ("bfloat16", "float16")


_logged: set[str] = set()


def log_once(level: int, message: str) -> None:
    """Logs ``message`` at ``level`` the first time it is asked to (a step is traced more than once)."""
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


def auto_refusal(dtype) -> str | None:
    """Why ``attention="auto"`` keeps XLA attention here, or None when cuDNN may be tried.

    cuDNN attention needs bf16/fp16 activations, JAX on an NVIDIA GPU of compute capability
    8.0 or later (cuDNN's fused attention kernels start there; JAX does not check it before
    compiling), and one device: its dropout seed is fixed per call site, so on a data-parallel
    mesh every device would draw the same masks.
    """
    import jax

    from trainer.distribute import gpu_has_bf16

    dtype = keras.backend.standardize_dtype(dtype)
    if dtype not in _CUDNN_DTYPES:
        return f"activations are {dtype}; cuDNN attention needs bfloat16 or float16"
    if jax.default_backend() != "gpu":
        return f"JAX runs on {jax.default_backend()}, not a GPU"
    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    if not gpu_has_bf16(capability):
        return f"{device.device_kind} has compute capability {capability}, below 8.0"
    distribution = keras.distribution.distribution()
    if distribution is not None and distribution.device_mesh.devices.size > 1:
        return (
            f"data-parallel over {distribution.device_mesh.devices.size} devices, where cuDNN's "
            "per-layer dropout seed would repeat on every device"
        )
    return None


def use_cudnn_attention(options: KernelOptions, dtype) -> bool:
    """Whether a layer with activations of ``dtype`` should try ``cudnn_attention`` now.

    Raises:
        ValueError: ``attention="cudnn"`` with float32 activations (naming the flags).
    """
    if options.attention == "xla" or keras.backend.backend() != "jax":
        return False
    if options.attention == "cudnn":
        if keras.backend.standardize_dtype(dtype) not in _CUDNN_DTYPES:
            raise ValueError(
                f"--attention_impl cudnn needs --precision mixed_bfloat16 or mixed_float16; "
                f"the activations are {keras.backend.standardize_dtype(dtype)}"
            )
        return True
    reason = auto_refusal(dtype)
    if reason:
        log_once(logging.INFO, f"attention: XLA ({reason})")
        return False
    return True


def probe_cudnn_attention(*, num_heads: int, head_size: int, seq_len: int, dtype: str, dropout_rate: float):
    """Compiles cuDNN attention's forward and backward at these sizes (batch 2) and runs them
    once; the error, or None.

    JAX checks shapes when it traces, but cuDNN itself builds (and may refuse) its kernels only
    when XLA compiles, and some failures show only when they run; either would otherwise stop
    a run at its first step.
    """
    import jax
    import jax.numpy as jnp

    shape = (2, seq_len, num_heads, head_size)
    q = jnp.zeros(shape, dtype)
    mask = jnp.ones((2, 1, seq_len, seq_len), bool)

    def loss(q, k, v):
        out = cudnn_attention(q, k, v, mask, scale=head_size**-0.5, dropout_rate=dropout_rate, seed=1)
        return jnp.sum(out.astype(jnp.float32))

    try:
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile()(q, q, q)
        jax.block_until_ready(grads)
    except Exception as e:  # noqa: BLE001 - any failure means: use XLA attention
        return f"{type(e).__name__}: {e}"[:500]
    return None


def resolve(
    options: KernelOptions, *, config, seq_len: int, dtype, batch_size: int | None = None
) -> KernelOptions:
    """``options`` with ``attention="auto"`` made ``cudnn`` or ``xla`` for this run, and
    ``dropout_rng="auto"`` the generator of this backend (both logged).

    ``cudnn`` only when ``auto_refusal`` finds nothing and a probe at the run's sizes compiles;
    ``xla`` without a probe when the Pallas kernels compute attention. Pallas kernels
    (``options.pallas``) are checked against the run (``trainer.pallas.check``, with
    ``batch_size`` examples a step and a micro-batch) and refused with every reason.
    """
    backend = keras.backend.backend()
    dropout_rng = options.dropout_for(backend)
    if dropout_rng != options.dropout_rng:
        log.info("dropout masks: %s (--dropout_rng auto on %s)", dropout_rng, backend)
        options = dataclasses.replace(options, dropout_rng=dropout_rng)
    if options.pallas:
        from trainer import pallas

        if batch_size is None:
            raise ValueError("resolve: the Pallas kernels need the batch size to check their shapes")
        pallas.check(options, config=config, batch_size=batch_size, seq_len=seq_len, dtype=dtype)
    if backend != "jax":
        return options
    distribution = keras.distribution.distribution()
    devices = distribution.device_mesh.devices.size if distribution is not None else 1
    if options.dropout_rng == "rbg" and devices > 1:
        log.warning("--dropout_rng rbg on %d devices: each one generates every device's masks", devices)
    if options.attention == "cudnn" and devices > 1:
        log.warning(
            "--attention_impl cudnn on %d devices: each one draws the same attention-dropout masks", devices
        )
    if options.attention != "auto":
        return options
    if "attention" in options.pallas:
        log.info("attention: Pallas kernels (--pallas_kernels attention)")
        return dataclasses.replace(options, attention="xla")
    reason = auto_refusal(dtype)
    if reason is None:
        reason = probe_cudnn_attention(
            num_heads=config.num_attention_heads,
            head_size=config.head_size,
            seq_len=seq_len,
            dtype=keras.backend.standardize_dtype(dtype),
            dropout_rate=config.attention_probs_dropout_prob,
        )
        if reason is not None:
            log.warning("cuDNN fused attention did not compile or run (%s); attention runs in XLA", reason)
    if reason is not None:
        log.info("attention: XLA (%s)", reason)
        return dataclasses.replace(options, attention="xla")
    log.info("attention: cuDNN fused attention, dropout inside the kernel (probe ran at L=%d)", seq_len)
    return dataclasses.replace(options, attention="cudnn")


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
        log_once(logging.WARNING, f"cuDNN fused attention not available ({e}); attention runs in XLA")
        return None
    log_once(logging.INFO, "attention: cuDNN fused attention traced (dropout inside the kernel)")
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
    return _keep_scaled(x, bits < jnp.uint32(threshold), keep)


def _keep_scaled(x, kept, keep: float):
    """``x / keep`` where ``kept``, else 0, computed in float32 and rounded once to ``x``'s dtype.

    Dividing a bf16 ``x`` by ``keep`` rounded to bf16 (0.9 is 0.8984375 there) would scale the
    kept values up by 0.17% too much on average.
    """
    import jax.numpy as jnp

    wide = jnp.promote_types(x.dtype, jnp.float32)
    scaled = (x.astype(wide) * (1.0 / keep)).astype(x.dtype)
    return jnp.where(kept, scaled, jnp.zeros((), x.dtype))


def _mix32(x):
    """lowbias32 of a uint32 array (C. Wellons' hash-prospector): a bijection of uint32 with a
    low avalanche bias (every input bit moves every output bit)."""
    import jax.numpy as jnp

    x = x ^ (x >> jnp.uint32(16))
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> jnp.uint32(15))
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> jnp.uint32(16))


def hash_keys(seed):
    """The two uint32 keys of ``hash_bits`` (a 64-bit key in all), each mixed from both words of
    ``seed`` (uint32[2]) in its own way."""
    import jax.numpy as jnp

    seed = jnp.asarray(seed).astype(jnp.uint32)
    k0 = _mix32(_mix32(seed[1] ^ jnp.uint32(0x9E3779B9)) + seed[0])
    k1 = _mix32(_mix32(seed[0] ^ jnp.uint32(0x85EBCA6B)) + seed[1])
    return k0, k1


def hash_bits(shape: tuple[int, ...], seed):
    """One uint32 per element of ``shape``, a hash of its position and ``seed`` (JAX only).

    The position is split into the index along the first axis and the offset within one
    slice of it, so arrays with more than 2^32 elements get distinct words too (a slice must
    hold fewer than 2^32). Word = mix(mix(offset ^ k0) + mix(row ^ k1)), with k0 and k1 each
    mixed from both seed words in its own way: distinct positions give distinct words within a
    slice, and seeds that differ in one bit (successive Keras seeds) give unrelated words.

    Args:
        shape: a static shape of rank 1 or more.
        seed: uint32[2] (a Keras ``SeedGenerator`` draw).
    """
    import jax
    import jax.numpy as jnp

    shape = tuple(int(d) for d in shape)
    if not shape:
        raise ValueError("hash_bits needs an array of rank 1 or more, got a scalar")
    inner = 1
    for d in shape[1:]:
        inner *= d
    if inner >= 2**32 or shape[0] >= 2**32:
        raise ValueError(
            f"hash_bits: shape {shape} has {shape[0]} rows of {inner} elements; both must be under 2^32"
        )
    k0, k1 = hash_keys(seed)
    offset = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in range(len(shape) - 1, 0, -1):
        offset = offset + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    row = jax.lax.broadcasted_iota(jnp.uint32, shape, 0)
    return _mix32(_mix32(offset ^ k0) + _mix32(row ^ k1))


def barrier(values):
    """``values`` (a tuple of arrays), materialised as they are: on JAX an optimisation
    barrier, which XLA neither fuses through nor recomputes across; elsewhere ``values``."""
    if keras.backend.backend() != "jax":
        return values
    import jax

    return jax.lax.optimization_barrier(values)


@functools.cache
def _add_rows_function():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def add(x, rows):
        return x + rows[None]

    def forward(x, rows):
        return x + rows[None], None

    def backward(_, grad):
        batch = grad.shape[0]
        summed = jax.lax.dot_general(
            jnp.ones((1, batch), grad.dtype),
            grad.reshape(batch, -1),
            (((1,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
        return grad, summed.reshape(grad.shape[1:]).astype(grad.dtype)

    add.defvjp(forward, backward)
    return add


def add_rows(x, rows):
    """``x`` [B, ...] plus ``rows`` (``x.shape[1:]``) on every row (JAX only), whose gradient for
    ``rows``, a sum over B, is a [1, B] x [B, rest] matrix product accumulated in float32
    (a custom VJP: reverse-mode differentiation only).

    Compiled for an H100, XLA gives the plain sum over B (a reduction over the major axis) a
    batch-minor layout and carries it through the backward pass: about 150 kernels a step
    transpose activations, and LayerNorm stays out of XLA's normalisation kernels. The product
    leaves every activation in its natural layout.
    """
    return _add_rows_function()(x, rows)


@functools.cache
def _qkv_function():
    import jax
    import jax.numpy as jnp

    def project(x, kernels, biases):
        def one(x, kernel, bias):  # the bias added to the float32 product, then rounded once
            product = jnp.matmul(x, kernel, preferred_element_type=jnp.float32)
            return (product + bias.astype(jnp.float32)).astype(x.dtype)

        # Each product after an optimisation barrier on x: XLA cannot merge the three into one
        # [H, 3H] product, whose output it would copy out again as three arrays.
        outputs = [one(x, kernels[0], biases[0])]
        for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
            x, _ = jax.lax.optimization_barrier((x, outputs[-1]))
            outputs.append(one(x, kernel, bias))
        return tuple(outputs)

    @jax.custom_vjp
    def qkv(x, kernels, biases):
        return project(x, kernels, biases)

    def forward(x, kernels, biases):
        return project(x, kernels, biases), (x, kernels, biases)

    def backward(residuals, grads):
        x, kernels, biases = residuals
        widths = [kernel.shape[1] for kernel in kernels]
        total, zero = sum(widths), jnp.zeros((), grads[0].dtype)
        # The gradients joined as [..., 3H] by padding and summing, as differentiation of a
        # slice does: XLA then writes the joined array and the biases' partial sums in one
        # kernel (a concatenation gets a kernel of its own, and the sums another).
        joined, offset = None, 0
        for grad, width in zip(grads, widths, strict=True):
            padding = [(0, 0, 0)] * (grad.ndim - 1) + [(offset, total - offset - width, 0)]
            padded = jax.lax.pad(grad, zero, padding)
            joined = padded if joined is None else joined + padded
            offset += width
        # the biases were added in float32
        dbias = jnp.sum(joined, axis=tuple(range(x.ndim - 1)), dtype=jnp.float32)
        return qkv_gradients(x, kernels, biases, joined, dbias)

    qkv.defvjp(forward, backward)
    return qkv


def qkv_gradients(x, kernels, biases, joined, dbias):
    """The gradients of ``project_qkv``'s ``x``, kernels and biases from its outputs' gradients
    joined as ``joined`` [..., 3H] (x's dtype), and the float32 sums of its columns ``dbias``
    [3H]: one product for x's gradient, one for the kernels'."""
    import jax
    import jax.numpy as jnp

    rows = tuple(range(x.ndim - 1))
    widths = [kernel.shape[1] for kernel in kernels]
    dx = jnp.matmul(joined, jnp.concatenate(kernels, axis=1).T)
    dkernel = jax.lax.dot_general(x, joined, ((rows, rows), ((), ())))  # [H, 3H]
    starts = [sum(widths[:i]) for i in range(len(widths))]
    dkernels = tuple(
        jax.lax.slice_in_dim(dkernel, start, start + width, axis=1).astype(kernel.dtype)
        for start, width, kernel in zip(starts, widths, kernels, strict=True)
    )
    dbiases = tuple(
        jax.lax.slice_in_dim(dbias, start, start + width).astype(bias.dtype)
        for start, width, bias in zip(starts, widths, biases, strict=True)
    )
    return dx.astype(x.dtype), dkernels, dbiases


def project_qkv(x, kernels, biases):
    """``x @ kernel + bias`` for the query, key and value projections (JAX only): three
    ``[..., H]`` arrays in ``x``'s dtype from ``x`` [..., H_in], three ``[H_in, H]`` kernels in
    ``x``'s dtype and three ``[H]`` biases (any float dtype: each is added to the product in
    float32, which is rounded once). A custom VJP (reverse-mode differentiation only).

    Forward, three products with the bias added inside each: compiled for an H100, one
    ``[H, 3H]`` product wrote [B, L, 3H] and a second kernel copied it out as three arrays for
    cuDNN attention (about 200 MB more traffic per layer at BERT-base, batch 256). Backward,
    the three gradients joined: one product for x's gradient, one for the kernels', one sum
    for the biases', where three products would need two sums of x's size.
    """
    return _qkv_function()(x, tuple(kernels), tuple(biases))


def _apply_hash_mask(x, rate: float, seed):
    import jax.numpy as jnp

    threshold = min(round(rate * 2**32), 2**32 - 1)  # P(bits < threshold) = rate, to 2^-32
    return _keep_scaled(x, hash_bits(x.shape, seed) >= jnp.uint32(threshold), 1.0 - rate)


@functools.cache
def _hash_dropout_function():
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def dropout(x, rate, seed):
        return _apply_hash_mask(x, rate, seed)

    def forward(x, rate, seed):
        # Only the seed is kept: the backward pass computes the same mask again.
        return _apply_hash_mask(x, rate, seed), seed

    def backward(rate, seed, grad):
        return _apply_hash_mask(grad, rate, seed), None

    dropout.defvjp(forward, backward)
    return dropout


def hash_dropout(x, rate: float, seed):
    """Dropout of ``x`` with a mask computed from ``hash_bits`` (JAX only).

    Its gradient applies the same mask, computed again from the seed: nothing of ``x``'s size
    is kept for the backward pass, and XLA fuses the mask into the kernels around it.

    Args:
        x: an array of rank 1 or more.
        rate: fraction dropped, in [0, 1).
        seed: uint32[2] (a Keras ``SeedGenerator`` draw).

    Returns:
        ``x / (1 - rate)`` where kept, 0 elsewhere; same shape and dtype as ``x``.
    """
    return _hash_dropout_function()(x, float(rate), seed)


class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` that draws its mask with ``rbg_dropout`` or ``hash_dropout``
    when options say so."""

    def __init__(self, rate: float, options: KernelOptions, seed: int | None = None, **kwargs):
        if seed is None and rate > 0:
            # The draw Keras' SeedGenerator would make (so initial weights and every other
            # seed stay as with keras.layers.Dropout), made here to know its value.
            seed = random.randint(1, int(1e9))
        super().__init__(rate, seed=seed, **kwargs)
        self.options = options
        self.static_seed = seed or 0  # for cuDNN attention dropout, a Python int

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            rng = self.options.dropout_for(keras.backend.backend())
            if rng == "rbg":
                return rbg_dropout(inputs, self.rate, self.seed_generator.next())
            if rng == "hash":
                return hash_dropout(inputs, self.rate, self.seed_generator.next())
        return super().call(inputs, training=training)
