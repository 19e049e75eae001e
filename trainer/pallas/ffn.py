"""The feed-forward block's first product with the GELU in its epilogue, forward and backward,
as Pallas (Triton) matrix products: ``--pallas_kernels ffn`` (``trainer.pallas``), the benchmark
runs ``keras_jax_pallas_ffn`` and ``keras_jax_pallas_norm_ffn`` (``benchmarks.trainer_common``).

XLA takes neither GELU pass into a matrix product's epilogue (docs/benchmarks_trainer.md).
Compiled for an H100 at BERT-base, batch 256, each layer's GELU costs a kernel of its own
forward (it reads ``h = x W1 + b1`` and writes ``gelu(h)``: 403 MB) and backward (it reads
``h`` and ``da = dz W2^T``, the output product's input gradient, and writes ``dh``: 604 MB).
Here the forward product writes ``h`` and ``gelu(h)`` from its accumulator, and the backward
product ``dz W2^T`` multiplies by ``gelu'(h)`` before it writes ``dh``, with each block's partial
sums of the bias gradient: ``da`` is never written. The other four products of the block
(``gelu(h) W2`` forward; ``W2``'s, ``W1``'s and ``x``'s gradients) stay XLA's.

It computes what the trainer's path (``trainer.layers.activation`` between two ``Dense``)
computes, with its roundings: each product rounded to the activations' dtype, the bias added in
that dtype, the exact (erf) GELU and its derivative in float32 from the rounded ``h``, rounded
once. Three differ: the products' summation order; ``dz W2^T`` multiplied by ``gelu'(h)`` from
the float32 accumulator (the trainer's path rounds that product to bf16 first); and the bias
gradient summed in float32 from per-block partial sums. Pallas' Triton lowering has no ``erf``: ``_erf`` is a rational
approximation of float32 ``erf`` (within 5e-7 of ``jax.lax.erf``). On CPU the kernels run in
Pallas' interpret mode (for tests).

Shape key: R rows (batch * sequence length), H hidden size, I intermediate size.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from trainer import pallas


def _checked_blocks(values, source: str) -> tuple:
    """``values`` as blocks (block_m, block_n, block_k, warps, stages: five positive integers);
    a ValueError naming ``source`` otherwise."""
    want = "block_m,block_n,block_k,warps,stages (five positive integers)"
    return pallas.checked_blocks(values, source, 5, lambda blocks: True, want)


# Blocks of the products' output (rows, columns), of the contraction, warps and pipeline stages
# per program. Forward and backward both run [R / BLOCK_M, I / BLOCK_N] programs. The default
# is Triton's usual first choice for bf16 on Hopper, not tuned on a GPU: ``benchmarks.pallas_ffn``
# times others and prints the fastest, which a session passes to the runs in
# ``PALLAS_FFN_BLOCKS`` (benchmarks/gpu_session.sh). Compiled for an H100, this one and those
# of that module's ``CANDIDATES`` use Hopper's warp-group products without spilling registers.
BLOCKS = pallas.environment_blocks("PALLAS_FFN_BLOCKS", (128, 128, 64, 8, 3), _checked_blocks)
# None: interpret the kernels unless JAX runs on a GPU. benchmarks.gpu_compile sets False: it
# lowers for a GPU from a CPU process.
interpret: bool | None = None
# How many layers took the Pallas products when traced (``feed_forward``): a benchmark run
# records it, so that a fallback (shapes the blocks do not split) does not pass for the kernels.
taken = 0

# A rational approximation of erf on [-4, 4] (odd numerator, even denominator in x^2), clamped
# outside, where float32 erf is +-1 to within 2e-8 (the form of an older XLA's float32 erf;
# within 5e-7 of jax.lax.erf on [-6, 6]).
_ERF_NUMERATOR = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02,
)  # fmt: skip
_ERF_DENOMINATOR = (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02,
)  # fmt: skip
_SQRT_HALF = np.float32(0.5**0.5)
_INV_SQRT_2PI = np.float32((2 * np.pi) ** -0.5)


def _erf(x):
    """float32 ``erf(x)``, elementwise, from products, sums and one division."""
    import jax.numpy as jnp

    x = jnp.clip(x, -4.0, 4.0)
    x2 = x * x
    p = jnp.full_like(x, _ERF_NUMERATOR[0])
    for c in _ERF_NUMERATOR[1:]:
        p = p * x2 + np.float32(c)
    q = jnp.full_like(x, _ERF_DENOMINATOR[0])
    for c in _ERF_DENOMINATOR[1:]:
        q = q * x2 + np.float32(c)
    return x * p / q


def _gelu(h):
    return 0.5 * h * (1.0 + _erf(h * _SQRT_HALF))


def _gelu_derivative(h):
    import jax.numpy as jnp

    return 0.5 * (1.0 + _erf(h * _SQRT_HALF)) + h * _INV_SQRT_2PI * jnp.exp(-0.5 * h * h)


def _fits(rows: int, hidden: int, intermediate: int, blocks=BLOCKS) -> bool:
    block_m, block_n, block_k = blocks[:3]
    return rows % block_m == 0 and intermediate % block_n == 0 and hidden % block_k == 0


def refusal(rows: int, hidden: int, intermediate: int, hidden_act: str, blocks=BLOCKS) -> str | None:
    """Why a block of ``rows`` (batch x sequence length) rows, these sizes and activation does not
    fit the kernels' ``blocks``, or None."""
    if hidden_act != "gelu":
        return f"the kernels compute the exact GELU (gelu), not {hidden_act}"
    if not _fits(rows, hidden, intermediate, blocks):
        return (
            f"{rows} rows (batch x sequence length), intermediate size {intermediate} and hidden size "
            f"{hidden} must be multiples of {blocks[0]}, {blocks[1]} and {blocks[2]} (PALLAS_FFN_BLOCKS)"
        )
    return None


@functools.cache
def _forward_call(rows: int, hidden: int, intermediate: int, dtype: str, blocks: tuple, interpret: bool):
    """``(h, gelu(h))`` of ``x`` [R, H], ``w`` [H, I] and ``b`` [1, I]: ``h = round(round(x w) + b)``."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    block_m, block_n, block_k, warps, stages = blocks
    act = jnp.dtype(dtype)

    def kernel(x_ref, w_ref, b_ref, h_ref, a_ref):
        def step(k, acc):
            x = x_ref[:, pl.ds(k * block_k, block_k)]
            w = w_ref[pl.ds(k * block_k, block_k), :]
            return acc + plt.dot(x, w)

        acc = jax.lax.fori_loop(0, hidden // block_k, step, jnp.zeros((block_m, block_n), jnp.float32))
        h = (acc.astype(act).astype(jnp.float32) + b_ref[...].astype(jnp.float32)).astype(act)
        h_ref[...] = h
        a_ref[...] = _gelu(h.astype(jnp.float32)).astype(act)

    out = pl.BlockSpec((block_m, block_n), lambda i, j: (i, j))
    array = jax.ShapeDtypeStruct((rows, intermediate), act)
    return pl.pallas_call(
        kernel,
        out_shape=(array, array),
        grid=(rows // block_m, intermediate // block_n),
        in_specs=[
            pl.BlockSpec((block_m, hidden), lambda i, j: (i, 0)),
            pl.BlockSpec((hidden, block_n), lambda i, j: (0, j)),
            pl.BlockSpec((1, block_n), lambda i, j: (0, j)),
        ],
        out_specs=(out, out),
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=stages),
        interpret=interpret,
        name="matmul_gelu_forward",
    )


@functools.cache
def _backward_call(rows: int, hidden: int, intermediate: int, dtype: str, blocks: tuple, interpret: bool):
    """``dh = round((dz w2^T) * gelu'(h))`` of ``dz`` [R, H], ``w2`` [I, H] and ``h`` [R, I],
    and per block of rows the float32 sums of ``dh``'s columns, [R / BLOCK_M, I]."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    block_m, block_n, block_k, warps, stages = blocks
    act = jnp.dtype(dtype)

    def kernel(dz_ref, w_ref, h_ref, dh_ref, db_ref):
        def step(k, acc):
            dz = dz_ref[:, pl.ds(k * block_k, block_k)]
            w = w_ref[:, pl.ds(k * block_k, block_k)]
            return acc + plt.dot(dz, w, trans_b=True)

        acc = jax.lax.fori_loop(0, hidden // block_k, step, jnp.zeros((block_m, block_n), jnp.float32))
        dh = (acc * _gelu_derivative(h_ref[...].astype(jnp.float32))).astype(act)
        dh_ref[...] = dh
        db_ref[...] = jnp.sum(dh.astype(jnp.float32), axis=0, keepdims=True)

    block = pl.BlockSpec((block_m, block_n), lambda i, j: (i, j))
    return pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct((rows, intermediate), act),
            jax.ShapeDtypeStruct((rows // block_m, intermediate), jnp.float32),
        ),
        grid=(rows // block_m, intermediate // block_n),
        in_specs=[
            pl.BlockSpec((block_m, hidden), lambda i, j: (i, 0)),
            pl.BlockSpec((block_n, hidden), lambda i, j: (j, 0)),
            block,
        ],
        out_specs=(block, pl.BlockSpec((1, block_n), lambda i, j: (i, j))),
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=stages),
        interpret=interpret,
        name="matmul_gelu_backward",
    )


@functools.cache
def _fused_function(blocks: tuple, interpret: bool):
    import jax
    import jax.numpy as jnp

    def run(x, w1, b1):
        rows, hidden = x.shape
        call = _forward_call(rows, hidden, w1.shape[1], x.dtype.name, blocks, interpret)
        return call(x, w1, b1.reshape(1, -1))

    @jax.custom_vjp
    def fused(x, w1, b1, w2):
        return jnp.matmul(run(x, w1, b1)[1], w2)

    def forward(x, w1, b1, w2):
        h, a = run(x, w1, b1)
        return jnp.matmul(a, w2), (x, w1, b1, w2, h, a)

    def backward(saved, dz):
        x, w1, b1, w2, h, a = saved
        rows, hidden = x.shape
        call = _backward_call(rows, hidden, w1.shape[1], x.dtype.name, blocks, interpret)
        dh, db = call(dz.astype(x.dtype), w2, h)
        return (
            jnp.matmul(dh, w1.T), jnp.matmul(x.T, dh), jnp.sum(db, axis=0).astype(b1.dtype),
            jnp.matmul(a.T, dz.astype(a.dtype)),
        )  # fmt: skip

    fused.defvjp(forward, backward)
    return fused


def gelu_product(x, w1, b1, w2, *, blocks: tuple = BLOCKS):
    """``gelu(x @ w1 + b1) @ w2`` (exact GELU) of 16-bit ``x`` [R, H], ``w1`` [H, I], ``b1`` [I]
    and ``w2`` [I, H], all in one dtype (JAX only; reverse-mode differentiation only)."""
    import jax

    rows, hidden = x.shape
    if not _fits(rows, hidden, w1.shape[1], blocks):
        raise ValueError(
            f"gelu_product: x of shape {tuple(x.shape)} and w1 of shape {tuple(w1.shape)} do not split "
            f"into blocks of {blocks[0]} rows, {blocks[1]} columns and {blocks[2]} of the contraction"
        )
    interpreted = jax.default_backend() != "gpu" if interpret is None else interpret
    return _fused_function(tuple(blocks), interpreted)(x, w1, b1, w2)


class _Product:
    """What ``trainer.layers.residual_norm`` reads of the output ``Dense``, for a product already
    made: calling it adds the bias, as the ``Dense`` would; ``trainer.pallas.norm`` takes
    ``product`` and ``bias`` apart."""

    def __init__(self, product, dense):
        self.product, self.bias = product, dense.bias

    def __call__(self, inputs):
        return self.product + ops.cast(self.bias, self.product.dtype)


def feed_forward(layer, x, residual, training):
    """``trainer.layers.feed_forward`` with ``gelu_product`` where it applies (JAX arrays, 16-bit
    activations, the exact GELU, shapes that split into whole blocks); elsewhere, symbolic
    builds included, the trainer's own (``trainer.pallas.fell_back``)."""
    from trainer import layers

    dtype = keras.backend.standardize_dtype(x.dtype)
    config = layer.config
    symbolic = isinstance(x, keras.KerasTensor)
    reason = pallas.call_refusal(dtype, 0.0, layer.kernel_options, symbolic)  # the products drop nothing
    if not reason:
        rows = x.shape[0] * x.shape[1]
        reason = refusal(rows, config.hidden_size, config.intermediate_size, config.hidden_act)
    if reason:
        pallas.fell_back("ffn", reason, symbolic)
        return layers.default_feed_forward(layer, x, residual, training)
    global taken
    taken += 1
    batch, seq_len, hidden = x.shape
    product = gelu_product(
        ops.reshape(x, (batch * seq_len, hidden)), ops.cast(layer.intermediate.kernel, dtype),
        ops.cast(layer.intermediate.bias, dtype), ops.cast(layer.output_dense.kernel, dtype),
    )  # fmt: skip
    return layers.residual_norm(
        layer.output_layer_norm, layer.hidden_dropout, residual,
        _Product(ops.reshape(product, (batch, seq_len, hidden)), layer.output_dense), None, training,
    )  # fmt: skip
