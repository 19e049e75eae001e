"""A fused residual sum, hash dropout and LayerNorm, forward and backward each one Pallas (Triton)
kernel: ``--pallas_kernels norm`` (``trainer.pallas``), the benchmark run
``keras_jax_pallas_norm`` (``benchmarks.trainer_common``).

XLA computes ``LayerNorm(residual + dropout(x @ W + b))`` in three memory-bound kernels forward
(compiled for an H100, 327 MB per LayerNorm at BERT-base, batch 256; it stores the dropout mask
for the backward pass) and reads the upstream gradient and the input three times backward.
The forward kernel reads the product and the residual once and writes the sum, the output and
each row's mean and 1/std (about 200 MB); the backward kernel reads the upstream gradients (of
the output's two copies, the next product's and the next residual sum's: XLA would add them in
a kernel of its own before a custom call, 151 MB) and the sum once and writes the sum's gradient (the residual's), the same masked by the dropout
(the product's), and per block of rows the partial sums of gamma's, beta's and the bias's
gradients.

It computes what the trainer's own path computes, rounding for rounding: the bias added in the
activations' dtype, the hash mask of ``trainer.kernels.hash_dropout`` (the same bits, from each
element's position in the ``[B, L, H]`` array), the kept values scaled in float32 and rounded
once, the residual sum rounded to that dtype, LayerNorm and its gradient in float32 from it.
The order of the row sums differs, and the bias's gradient is summed in float32 (the trainer's
XLA path sums the bf16 values). On CPU the kernels run in Pallas' interpret mode (for tests);
Pallas' Triton lowering wants power-of-two blocks, so a row of H values is loaded as the next
power of two under a mask.

Shape key: B batch, L sequence length, H hidden size, R = B * L rows.
"""

from __future__ import annotations

import functools
import math

import keras
from keras import ops

from trainer import pallas


def _checked_blocks(values, source: str) -> tuple:
    """``values`` as blocks: rows and warps per program forward, then rows per program, rows at
    a time and warps backward (five powers of two, the rows at a time no more than the
    backward's rows); a ValueError naming ``source`` otherwise."""
    want = (
        "rows,warps,backward_rows,backward_chunk_rows,backward_warps (five powers of two, "
        "backward_chunk_rows at most backward_rows)"
    )
    fits = lambda blocks: not any(b & (b - 1) for b in blocks) and blocks[3] <= blocks[2]  # noqa: E731
    return pallas.checked_blocks(values, source, 5, fits, want)


# Rows and warps per program forward; rows per program, rows at a time and warps backward. First
# choices: a row of 768 is loaded as 1,024 values; 8 warps keep 64 of each float32 block per
# thread forward. The backward writes per-block partial sums, [R / rows, H] float32 each, and
# takes its block's rows some at a time: compiled for an H100 (BERT-base), 32 rows at once
# spilled registers with 16 warps (1.6 KB a thread; 512 threads get at most 128 registers
# each), and so did 16 rows with 8 or 16 warps. On an H100 (BERT-base, batch 256) these ran the
# backward at about 1.2 TB/s, the forward near 2 (docs/benchmarks_trainer.md, fourth run):
# ``benchmarks.pallas_norm`` times other choices, passed in ``PALLAS_NORM_BLOCKS``.
BLOCKS = pallas.environment_blocks("PALLAS_NORM_BLOCKS", (16, 8, 32, 8, 8), _checked_blocks)
# None: interpret the kernel unless JAX runs on a GPU. benchmarks.gpu_compile sets False: it
# lowers for a GPU from a CPU process.
interpret: bool | None = None
# How many sublayers took the fused kernels when traced (``residual_norm``): a benchmark run
# records it, so that a fallback does not pass for the kernels.
taken = 0


def _dropped(values, keys_ref, block: int, seq_len: int, width: int, rate: float, start: int = 0):
    """Inside a kernel over ``block`` rows of ``[R, H]`` (padded columns), for its rows from
    ``start`` on: ``values`` with
    ``trainer.kernels.hash_dropout``'s mask applied, the kept ones scaled in float32 and rounded
    once to their dtype. The mask's bits come from each element's position in the ``[B, L, H]``
    array and the keys ``keys_ref`` holds (``trainer.kernels.hash_keys``)."""
    if rate == 0:
        return values
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl

    from trainer.kernels import _mix32 as mix32

    shape = values.shape
    row = pl.program_id(0) * block + start + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    batch = (row // seq_len).astype(jnp.uint32)
    offset = ((row % seq_len) * width + jax.lax.broadcasted_iota(jnp.int32, shape, 1)).astype(jnp.uint32)
    bits = mix32(mix32(offset ^ keys_ref[0]) + mix32(batch ^ keys_ref[1]))
    threshold = min(round(rate * 2**32), 2**32 - 1)
    scaled = (values.astype(jnp.float32) * (1.0 / (1.0 - rate))).astype(values.dtype)
    return jnp.where(bits >= jnp.uint32(threshold), scaled, jnp.zeros((), values.dtype))


@functools.cache
def _forward_call(
    rows: int, seq_len: int, width: int, dtype: str, rate: float, epsilon: float, interpret: bool,
    blocks: tuple,
):  # fmt: skip
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    padded = 1 << (width - 1).bit_length()
    act = jnp.dtype(dtype)
    block, warps = blocks[:2]

    def kernel(keys_ref, x_ref, b_ref, r_ref, g_ref, beta_ref, y_ref, s_ref, mean_ref, rstd_ref):
        cols = jax.lax.broadcasted_iota(jnp.int32, (block, padded), 1)
        valid = cols < width
        in_row = jax.lax.broadcasted_iota(jnp.int32, (1, padded), 1) < width
        span = (slice(None), pl.ds(0, padded))
        x = plt.load(x_ref.at[span], mask=valid, other=0)
        bias = plt.load(b_ref.at[span], mask=in_row, other=0)
        a = (x.astype(jnp.float32) + bias.astype(jnp.float32)).astype(act)  # the Dense output
        a = _dropped(a, keys_ref, block, seq_len, width, rate)
        residual = plt.load(r_ref.at[span], mask=valid, other=0)
        s = (residual.astype(jnp.float32) + a.astype(jnp.float32)).astype(act)
        plt.store(s_ref.at[span], s, mask=valid)
        sf = jnp.where(valid, s.astype(jnp.float32), 0.0)
        mean = jnp.sum(sf, axis=1, keepdims=True) / width
        centred = jnp.where(valid, sf - mean, 0.0)
        rstd = jax.lax.rsqrt(jnp.sum(centred * centred, axis=1, keepdims=True) / width + epsilon)
        gamma = plt.load(g_ref.at[span], mask=in_row, other=0)
        beta = plt.load(beta_ref.at[span], mask=in_row, other=0)
        plt.store(y_ref.at[span], (centred * rstd * gamma + beta).astype(act), mask=valid)
        mean_ref[...] = mean
        rstd_ref[...] = rstd

    rows_spec = pl.BlockSpec((block, width), lambda i: (i, 0))
    vector = pl.BlockSpec((1, width), lambda i: (0, 0))
    stat = pl.BlockSpec((block, 1), lambda i: (i, 0))
    array = jax.ShapeDtypeStruct((rows, width), act)
    stats = jax.ShapeDtypeStruct((rows, 1), jnp.float32)
    return pl.pallas_call(
        kernel,
        out_shape=(array, array, stats, stats),
        grid=(rows // block,),
        in_specs=[pl.BlockSpec((2,), lambda i: (0,)), rows_spec, vector, rows_spec, vector, vector],
        out_specs=(rows_spec, rows_spec, stat, stat),
        compiler_params=plt.CompilerParams(num_warps=warps),
        interpret=interpret,
        name="residual_norm_forward",
    )


@functools.cache
def _backward_call(
    rows: int, seq_len: int, width: int, dtype: str, rate: float, interpret: bool, blocks: tuple
):
    """The LayerNorm backward from the row statistics, the dropout mask applied to the result,
    and per block of rows the partial sums of gamma's, beta's and the bias's gradients."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    padded = 1 << (width - 1).bit_length()
    act = jnp.dtype(dtype)
    block, chunk, warps = blocks[2:]  # powers of two, chunk <= block: whole chunks (_checked_blocks)

    def kernel(
        keys_ref, dy_ref, dr_ref, s_ref, mean_ref, rstd_ref, g_ref, ds_ref, da_ref, dg_ref, db_ref, dbias_ref
    ):
        cols = jax.lax.broadcasted_iota(jnp.int32, (chunk, padded), 1)
        valid = cols < width
        in_row = jax.lax.broadcasted_iota(jnp.int32, (1, padded), 1) < width
        gamma = plt.load(g_ref.at[:, pl.ds(0, padded)], mask=in_row, other=0)
        sums = [jnp.zeros((1, padded), jnp.float32) for _ in range(3)]  # gamma's, beta's, bias's
        for start in range(0, block, chunk):  # rows in chunks: a whole block's would spill
            span = (pl.ds(start, chunk), pl.ds(0, padded))
            # The two copies' gradients, summed and rounded as autodiff sums a tensor read twice.
            dy = plt.load(dy_ref.at[span], mask=valid, other=0).astype(jnp.float32)
            dy += plt.load(dr_ref.at[span], mask=valid, other=0).astype(jnp.float32)
            dy = dy.astype(act).astype(jnp.float32)
            sf = plt.load(s_ref.at[span], mask=valid, other=0).astype(jnp.float32)
            rstd = rstd_ref[pl.ds(start, chunk), :]
            xhat = jnp.where(valid, (sf - mean_ref[pl.ds(start, chunk), :]) * rstd, 0.0)
            g = dy * gamma
            mean_g = jnp.sum(g, axis=1, keepdims=True) / width
            mean_gx = jnp.sum(g * xhat, axis=1, keepdims=True) / width
            ds = (rstd * (g - mean_g - xhat * mean_gx)).astype(act)
            plt.store(ds_ref.at[span], ds, mask=valid)
            da = _dropped(ds, keys_ref, block, seq_len, width, rate, start)
            plt.store(da_ref.at[span], da, mask=valid)
            sums[0] += jnp.sum(dy * xhat, axis=0, keepdims=True)
            sums[1] += jnp.sum(dy, axis=0, keepdims=True)
            sums[2] += jnp.sum(jnp.where(valid, da.astype(jnp.float32), 0.0), axis=0, keepdims=True)
        whole_row = (slice(None), pl.ds(0, padded))
        for ref, total in zip((dg_ref, db_ref, dbias_ref), sums, strict=True):
            plt.store(ref.at[whole_row], total, mask=in_row)

    rows_spec = pl.BlockSpec((block, width), lambda i: (i, 0))
    stat = pl.BlockSpec((block, 1), lambda i: (i, 0))
    vector = pl.BlockSpec((1, width), lambda i: (0, 0))
    partial = pl.BlockSpec((1, width), lambda i: (i, 0))
    array = jax.ShapeDtypeStruct((rows, width), act)
    sums = jax.ShapeDtypeStruct((rows // block, width), jnp.float32)
    return pl.pallas_call(
        kernel,
        out_shape=(array, array, sums, sums, sums),
        grid=(rows // block,),
        in_specs=[pl.BlockSpec((2,), lambda i: (0,)), rows_spec, rows_spec, rows_spec, stat, stat, vector],
        out_specs=(rows_spec, rows_spec, partial, partial, partial),
        compiler_params=plt.CompilerParams(num_warps=warps),
        interpret=interpret,
        name="residual_norm_backward",
    )


@functools.cache
def _fused_function(rate: float, epsilon: float, interpret: bool, blocks: tuple):
    import jax
    import jax.numpy as jnp

    from trainer import kernels

    def run(x, bias, residual, gamma, beta, seed):
        batch, seq_len, width = x.shape
        call = _forward_call(batch * seq_len, seq_len, width, x.dtype.name, rate, epsilon, interpret, blocks)
        flat = lambda a: a.reshape(batch * seq_len, width)  # noqa: E731
        y, s, mean, rstd = call(
            jnp.stack(kernels.hash_keys(seed)), flat(x), bias.reshape(1, width), flat(residual),
            gamma.reshape(1, width), beta.reshape(1, width),
        )  # fmt: skip
        return y.reshape(x.shape), (
            s.reshape(x.shape),
            mean.reshape(batch, seq_len, 1),
            rstd.reshape(batch, seq_len, 1),
        )

    @jax.custom_vjp
    def fused(x, bias, residual, gamma, beta, seed):
        y = run(x, bias, residual, gamma, beta, seed)[0]
        return y, y

    def forward(x, bias, residual, gamma, beta, seed):
        y, (s, mean, rstd) = run(x, bias, residual, gamma, beta, seed)
        return (y, y), (s, mean, rstd, gamma, bias, seed)

    def backward(saved, upstream):
        s, mean, rstd, gamma, bias, seed = saved
        batch, seq_len, width = s.shape
        call = _backward_call(batch * seq_len, seq_len, width, s.dtype.name, rate, interpret, blocks)
        flat = lambda a: a.reshape(batch * seq_len, -1)  # noqa: E731
        ds, da, dgamma, dbeta, dbias = call(
            jnp.stack(kernels.hash_keys(seed)), *(flat(u.astype(s.dtype)) for u in upstream), flat(s),
            flat(mean), flat(rstd), gamma.reshape(1, width),
        )  # fmt: skip
        return (
            da.reshape(s.shape), jnp.sum(dbias, axis=0).astype(bias.dtype), ds.reshape(s.shape),
            jnp.sum(dgamma, axis=0), jnp.sum(dbeta, axis=0), None,
        )  # fmt: skip

    fused.defvjp(forward, backward)
    return fused


def _row_multiple(blocks: tuple | None = None) -> int:
    """The number of rows, B * L, must be a multiple of: both kernels' grids cover them whole
    (``blocks``, ``BLOCKS`` by default)."""
    blocks = blocks or BLOCKS
    return math.lcm(blocks[0], blocks[2])


def refusal(shape, blocks: tuple | None = None) -> str | None:
    """Why activations of ``shape`` [B, L, H] do not fit the kernels with ``blocks`` (``BLOCKS``
    by default), or None."""
    if (shape[0] * shape[1]) % _row_multiple(blocks) == 0:
        return None
    return f"batch x sequence length = {shape[0] * shape[1]} rows, not a multiple of {_row_multiple(blocks)}"


def fused_residual_norm(
    x, bias, residual, gamma, beta, seed, *, rate: float, epsilon: float, blocks: tuple | None = None
):
    """``LayerNorm(residual + hash_dropout(x + bias))`` of 16-bit ``x`` and ``residual`` [B, L, H],
    ``bias`` [H] in their dtype, ``gamma`` and ``beta`` [H] float32, ``seed`` uint32[2] (JAX only;
    reverse-mode differentiation only), with ``blocks`` as ``BLOCKS`` (those by default).
    Returns it twice, as ``trainer.layers.residual_norm`` does; the backward kernel sums the two
    copies' gradients."""
    import jax

    blocks = BLOCKS if blocks is None else _checked_blocks(blocks, "fused_residual_norm blocks")
    if refusal(x.shape, blocks):
        raise ValueError(
            f"fused_residual_norm: x of shape {tuple(x.shape)} has B * L = {x.shape[0] * x.shape[1]} rows, "
            f"not a multiple of {_row_multiple(blocks)}"
        )
    interpreted = jax.default_backend() != "gpu" if interpret is None else interpret
    fused = _fused_function(float(rate), float(epsilon), interpreted, blocks)
    return fused(x, bias, residual, gamma, beta, seed)


def residual_norm(norm, dropout, residual, dense, inputs, training):
    """``trainer.layers.residual_norm`` with ``fused_residual_norm`` where it applies (JAX arrays,
    16-bit activations, hash dropout or none, B * L a multiple of ``refusal``'s, 32 by default); elsewhere, symbolic
    builds included, the trainer's own (``trainer.pallas.fell_back``)."""
    from trainer import layers

    dtype = keras.backend.standardize_dtype(residual.dtype)
    rate = dropout.rate if training else 0.0
    symbolic = isinstance(residual, keras.KerasTensor)
    reason = pallas.call_refusal(dtype, rate, dropout.options, symbolic) or refusal(residual.shape)
    if reason:
        pallas.fell_back("norm", reason, symbolic)
        return layers.default_residual_norm(norm, dropout, residual, dense, inputs, training)
    import jax.numpy as jnp

    global taken
    taken += 1
    product = getattr(dense, "product", None)  # made already (trainer.pallas.ffn)
    if product is None:
        product = ops.matmul(ops.cast(inputs, dtype), ops.cast(dense.kernel, dtype))
    seed = dropout.seed_generator.next() if rate > 0 else jnp.zeros((2,), jnp.uint32)
    return fused_residual_norm(
        product, ops.cast(dense.bias, dtype), residual, ops.cast(norm.gamma, "float32"),
        ops.cast(norm.beta, "float32"), seed, rate=rate, epsilon=norm.epsilon,
    )  # fmt: skip
