"""Self-attention with the hash dropout of its probabilities inside one Pallas (Triton) kernel
forward and one backward: ``--pallas_kernels attention`` (``trainer.pallas``), the benchmark
runs ``keras_jax_pallas_attention`` and ``keras_jax_pallas_all`` (``benchmarks.trainer_common``).

Compiled for an H100 at BERT-base, batch 256, seq 128, cuDNN's fused attention moves about the
least its inputs and outputs allow (7.5 GB a step), but it took 7.59 ms of the measured step at
2bd69d1: some 1 GB a millisecond, half the rate of the step's other memory-bound kernels
(docs/benchmarks_trainer.md). At short sequences one program can hold a whole head's scores:

- **Forward:** a program per (example, head, block of queries) reads its queries and the head's
  keys and values, and writes only the context: the scores, the softmax and the dropout stay in
  registers, and nothing else is kept for the backward pass.
- **Backward:** a program per (example, head) reads the head's queries, keys, values and the
  context's gradient, and for each block of queries forms the scores, probabilities and
  dropout mask again, writing that block's query gradient; the key and value gradients are
  summed over the blocks in float32 and written once. The softmax's row sum of
  ``probabilities * gradient`` is formed from the whole row in the program, so the forward
  output is not read again. In a layer (``self_attention``) the backward writes the
  three gradients as the one [B, L, 3H] array that the projections' gradients read, with its
  columns' sums for the biases: no kernel joins them (``trainer.kernels.project_qkv``'s
  backward otherwise does, 290 MB a layer).

It computes what the trainer's XLA attention with ``--dropout_rng hash`` computes
(``trainer.layers.attention``), with its roundings: the scores rounded to the activations'
dtype and scaled there, the masked softmax in float32, the probabilities rounded, dropped with
``trainer.kernels.hash_dropout``'s mask of the same [B, N, L, L] positions and seed (the same
elements dropped), each product rounded once; its gradients as JAX's autodiff of that path
forms and groups them. What may differ: the products' and sums' order, and on a GPU the
softmax's division (Triton's is not IEEE's), each at most a bf16 step where a value lies near
a rounding boundary. cuDNN's attention (the trainer's default on a GPU) keeps the
probabilities in float32 and draws its own mask.

Shape key: B batch, L sequence length, N heads, D head size, H = N * D.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from trainer import pallas


def _checked_blocks(values, source: str) -> tuple:
    """``values`` as blocks (queries per block and warps, forward then backward: four powers of
    two, the blocks 16 or more); a ValueError naming ``source`` otherwise."""
    want = "block_q,warps,backward_block_q,backward_warps (four powers of two, the blocks 16 or more)"
    fits = lambda blocks: not any(b & (b - 1) for b in blocks) and min(blocks[::2]) >= 16  # noqa: E731
    return pallas.checked_blocks(values, source, 4, fits, want)


# Queries per block and warps per program, forward then backward: the forward runs
# [B, N, L / block_q] programs; the backward [B, N], each looping over L / backward_block_q
# blocks of queries; blocks longer than the sequence are cut to it (``fitted``). Compiled for an
# H100 (BERT-base, seq 128), this choice and those of ``benchmarks.pallas_attention.CANDIDATES``
# use Hopper's warp-group products without spilling registers; 64 queries a block backward spill
# with 8 warps. Not tuned on a GPU: that module times them (benchmarks/gpu_session.sh).
BLOCKS = pallas.environment_blocks("PALLAS_ATTENTION_BLOCKS", (128, 8, 128, 8), _checked_blocks)
# None: interpret the kernels unless JAX runs on a GPU. benchmarks.gpu_compile sets False: it
# lowers for a GPU from a CPU process.
interpret: bool | None = None
# How many layers took the kernels when traced (``self_attention``): a benchmark run records it, so
# that a fallback does not pass for the kernels.
taken = 0
# The longest sequence and the largest head one program takes whole (its [block_q, L] scores
# and the head's [L, D] keys, values and float32 gradients stay in registers): compiled for an
# H100, the backward spilled registers at L = 256 (D = 64) and at D = 128 (L = 128).
MAX_SEQ_LEN, MAX_HEAD_SIZE = 128, 64


def _power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def fitted(blocks: tuple, seq_len: int) -> tuple:
    """``blocks`` with their blocks of queries cut to the sequence length where longer."""
    return (min(blocks[0], seq_len), blocks[1], min(blocks[2], seq_len), blocks[3])


def refusal(shape, num_heads: int, blocks: tuple = BLOCKS) -> str | None:
    """Why ``[B, L, H]`` queries with ``num_heads`` heads do not fit the kernels' ``blocks`` (cut
    to the sequence, ``fitted``), or None."""
    batch, seq_len, hidden = shape
    head_size = hidden // num_heads if num_heads else 0
    if not num_heads or hidden % num_heads:
        return f"hidden size {hidden} does not split into {num_heads} heads"
    if not (_power_of_two(seq_len) and _power_of_two(head_size)):
        return f"sequence length {seq_len} and head size {head_size} must be powers of two"
    if not 16 <= head_size <= MAX_HEAD_SIZE:
        return f"head size {head_size} must be 16 to {MAX_HEAD_SIZE}"
    step = max(fitted(blocks, seq_len)[::2])
    if not 16 <= seq_len <= MAX_SEQ_LEN or seq_len % step:
        return f"sequence length {seq_len} must be 16 to {MAX_SEQ_LEN} and a multiple of {step} queries"
    if num_heads * seq_len * seq_len >= 2**31:
        return f"{num_heads} heads of {seq_len}x{seq_len} probabilities overflow the mask's offsets"
    return None


def _rounded_scale(head_size: int, dtype) -> np.float32:
    """``head_size ** -0.5`` as the trainer multiplies by it: rounded to the activations' dtype."""
    return np.float32(np.asarray(head_size**-0.5, dtype))  # numpy rounds to bf16 (ml_dtypes)


def _probabilities(q, k, valid, scale, act):
    """Inside a kernel: the masked softmax (float32) of one block of queries [BQ, D] against all
    keys [L, D]; ``valid`` [1, L] True where a key may be attended."""
    import jax.numpy as jnp
    from jax.experimental.pallas import triton as plt

    s = plt.dot(q, k, trans_b=True).astype(act)  # [BQ, L], rounded as XLA's product
    s = (s.astype(jnp.float32) * scale).astype(act).astype(jnp.float32)
    s = jnp.where(valid, s, jnp.float32(-1e30))
    e = jnp.exp(s - jnp.max(s, axis=1, keepdims=True))
    return e / jnp.sum(e, axis=1, keepdims=True)


def _kept(keys_ref, start: int, shape, seq_len: int, rate: float):
    """Inside a kernel of program (example, head, ...): True where ``hash_dropout`` keeps the
    probabilities of queries ``start`` to ``start + shape[0]`` against all keys: the bits of
    their positions in the [B, N, L, L] array under the keys ``keys_ref`` holds."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl

    from trainer.kernels import _mix32 as mix32

    query = start + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    key = jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    offset = (pl.program_id(1) * (seq_len * seq_len) + query * seq_len + key).astype(jnp.uint32)
    example = pl.program_id(0).astype(jnp.uint32)
    bits = mix32(mix32(offset ^ keys_ref[0]) + mix32(example ^ keys_ref[1]))
    return bits >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))


def _dropped(values, kept, rate: float):
    """``values`` where ``kept``, scaled by 1 / (1 - rate) in float32 and rounded once; else 0."""
    import jax.numpy as jnp

    if rate == 0:
        return values
    scaled = (values.astype(jnp.float32) * (1.0 / (1.0 - rate))).astype(values.dtype)
    return jnp.where(kept, scaled, jnp.zeros((), values.dtype))


def _specs(rows: int, head_size: int, seq_len: int):
    """Block specs over a grid (example, head, block of queries): the keys, the example's key
    mask, a block of ``rows`` queries of the head, and all of the head's rows."""
    from jax.experimental import pallas as pl

    return (
        pl.BlockSpec((2,), lambda b, n, i: (0,)),
        pl.BlockSpec((None, seq_len), lambda b, n, i: (b, 0)),
        pl.BlockSpec((None, rows, head_size), lambda b, n, i: (b, i, n)),
        pl.BlockSpec((None, seq_len, head_size), lambda b, n, i: (b, 0, n)),
    )


@functools.cache
def _forward_call(shape: tuple, num_heads: int, dtype: str, rate: float, blocks: tuple, interpret: bool):
    """The context [B, L, H] of keys [2] (``hash_keys``), valid [B, L] int32, q, k, v [B, L, H]."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    batch, seq_len, hidden = shape
    head_size = hidden // num_heads
    act = jnp.dtype(dtype)
    scale = _rounded_scale(head_size, act)
    block_q, warps = blocks[:2]

    def kernel(keys_ref, mask_ref, q_ref, k_ref, v_ref, o_ref):
        valid = (mask_ref[...] != 0)[None, :]
        p = _probabilities(q_ref[...], k_ref[...], valid, scale, act)
        start = pl.program_id(2) * block_q
        z = _dropped(p.astype(act), _kept(keys_ref, start, p.shape, seq_len, rate) if rate else None, rate)
        o_ref[...] = plt.dot(z, v_ref[...]).astype(act)

    keys, mask, rows, whole = _specs(block_q, head_size, seq_len)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(shape, act),
        grid=(batch, num_heads, seq_len // block_q),
        in_specs=[keys, mask, rows, whole, whole],
        out_specs=rows,
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=1),
        interpret=interpret,
        name="attention_forward",
    )


@functools.cache
def _backward_call(
    shape: tuple, num_heads: int, dtype: str, rate: float, blocks: tuple, joined: bool, interpret: bool
):
    """The gradients of q, k and v [B, L, H] from keys [2], valid [B, L] int32, q, k, v and the
    context's gradient [B, L, H]: three arrays, or with ``joined`` one [B, L, 3H] (q's, k's and
    v's columns in turn, as ``trainer.kernels.qkv_gradients`` reads them) and the float32 sums
    of its columns per example, [B, 1, 3H]."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    batch, seq_len, hidden = shape
    head_size = hidden // num_heads
    act = jnp.dtype(dtype)
    scale = _rounded_scale(head_size, act)
    block_q, warps = blocks[2:]

    def kernel(keys_ref, mask_ref, q_ref, k_ref, v_ref, do_ref, *out_refs):
        valid = (mask_ref[...] != 0)[None, :]
        k, v = k_ref[...], v_ref[...]
        dk = jnp.zeros((seq_len, head_size), jnp.float32)
        dv = jnp.zeros((seq_len, head_size), jnp.float32)
        dq_sums = jnp.zeros((1, head_size), jnp.float32)
        # with ``joined``, this head's columns of q's, k's and v's gradients in the joined array
        columns = [pl.ds((part * num_heads + pl.program_id(1)) * head_size, head_size) for part in range(3)]
        for start in range(0, seq_len, block_q):
            span = pl.ds(start, block_q)
            q, do = q_ref[span, :], do_ref[span, :]
            p = _probabilities(q, k, valid, scale, act)
            kept = _kept(keys_ref, start, p.shape, seq_len, rate) if rate else None
            dv += plt.dot(_dropped(p.astype(act), kept, rate), do, trans_a=True)
            # the gradient of the rounded, dropped probabilities, then of the float32 softmax
            dp = _dropped(plt.dot(do, v, trans_b=True).astype(act), kept, rate).astype(jnp.float32)
            ds = p * dp - p * jnp.sum(dp * p, axis=1, keepdims=True)  # as autodiff of softmax groups it
            ds = jnp.where(valid, ds, 0.0).astype(act)
            ds = (ds.astype(jnp.float32) * scale).astype(act)  # the scores' gradient
            dq = plt.dot(ds, k).astype(act)
            dk += plt.dot(ds, q, trans_a=True)
            if joined:
                out_refs[0][span, columns[0]] = dq
                dq_sums += jnp.sum(dq.astype(jnp.float32), axis=0, keepdims=True)
            else:
                out_refs[0][span, :] = dq
        dk, dv = dk.astype(act), dv.astype(act)
        if joined:
            dqkv_ref, sums_ref = out_refs
            dqkv_ref[:, columns[1]] = dk
            dqkv_ref[:, columns[2]] = dv
            sums_ref[:, columns[0]] = dq_sums
            sums_ref[:, columns[1]] = jnp.sum(dk.astype(jnp.float32), axis=0, keepdims=True)
            sums_ref[:, columns[2]] = jnp.sum(dv.astype(jnp.float32), axis=0, keepdims=True)
        else:
            out_refs[1][...] = dk
            out_refs[2][...] = dv

    keys, mask, _, whole = _specs(seq_len, head_size, seq_len)
    if joined:  # each program writes its head's columns of the example's rows
        out_shape = (
            jax.ShapeDtypeStruct((batch, seq_len, 3 * hidden), act),
            jax.ShapeDtypeStruct((batch, 1, 3 * hidden), jnp.float32),
        )
        out_specs = (
            pl.BlockSpec((None, seq_len, 3 * hidden), lambda b, n, i: (b, 0, 0)),
            pl.BlockSpec((None, 1, 3 * hidden), lambda b, n, i: (b, 0, 0)),
        )
    else:
        out_shape, out_specs = (jax.ShapeDtypeStruct(shape, act),) * 3, (whole,) * 3
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(batch, num_heads, 1),
        in_specs=[keys, mask, whole, whole, whole, whole],
        out_specs=out_specs,
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=1),
        interpret=interpret,
        name="attention_backward",
    )


def _keys(seed):
    import jax.numpy as jnp

    from trainer import kernels

    return jnp.stack(kernels.hash_keys(seed))


@functools.cache
def _fused_function(num_heads: int, rate: float, blocks: tuple, interpret: bool):
    import jax

    @jax.custom_vjp
    def fused(q, k, v, valid, seed):
        call = _forward_call(q.shape, num_heads, q.dtype.name, rate, blocks, interpret)
        return call(_keys(seed), valid, q, k, v)

    def forward(q, k, v, valid, seed):
        return fused(q, k, v, valid, seed), (q, k, v, valid, seed)

    def backward(saved, grad):
        q, k, v, valid, seed = saved
        call = _backward_call(q.shape, num_heads, q.dtype.name, rate, blocks, False, interpret)
        dq, dk, dv = call(_keys(seed), valid, q, k, v, grad.astype(q.dtype))
        return dq, dk, dv, None, None

    fused.defvjp(forward, backward)
    return fused


@functools.cache
def _self_attention_function(num_heads: int, rate: float, blocks: tuple, interpret: bool):
    import jax
    import jax.numpy as jnp

    from trainer import kernels

    def run(x, weights, biases, valid, seed):
        q, k, v = kernels.project_qkv(x, weights, biases)
        call = _forward_call(q.shape, num_heads, q.dtype.name, rate, blocks, interpret)
        return call(_keys(seed), valid, q, k, v), (q, k, v)

    @jax.custom_vjp
    def block(x, weights, biases, valid, seed):
        return run(x, weights, biases, valid, seed)[0]

    def forward(x, weights, biases, valid, seed):
        context, qkv = run(x, weights, biases, valid, seed)
        return context, (x, weights, biases, valid, seed, qkv)

    def backward(saved, grad):
        x, weights, biases, valid, seed, (q, k, v) = saved
        call = _backward_call(q.shape, num_heads, q.dtype.name, rate, blocks, True, interpret)
        joined, sums = call(_keys(seed), valid, q, k, v, grad.astype(q.dtype))
        dbias = jnp.sum(sums, axis=(0, 1))
        return (*kernels.qkv_gradients(x, weights, biases, joined, dbias), None, None)

    block.defvjp(forward, backward)
    return block


def _checked(name: str, shape, num_heads: int, blocks: tuple) -> tuple[bool, tuple]:
    """Whether to run the kernels interpreted (``interpret``), and ``blocks`` cut to the sequence
    (``fitted``); a ValueError naming ``name`` and the shape when ``refusal`` finds it unfit."""
    import jax

    reason = refusal(shape, num_heads, blocks)
    if reason:
        raise ValueError(f"{name}: queries of shape {tuple(shape)}: {reason}")
    interpreted = jax.default_backend() != "gpu" if interpret is None else interpret
    return interpreted, fitted(tuple(blocks), shape[1])


def fused_attention(q, k, v, valid, seed, *, num_heads: int, rate: float, blocks: tuple = BLOCKS):
    """The context [B, L, H] of 16-bit queries, keys and values [B, L, H] (``num_heads`` heads of
    contiguous columns), ``valid`` bool or int [B, L] (True where a key may be attended) and
    ``seed`` uint32[2] of the probabilities' hash dropout at ``rate`` (JAX only; reverse-mode
    differentiation only)."""
    import jax.numpy as jnp

    interpreted, blocks = _checked("fused_attention", q.shape, num_heads, blocks)
    function = _fused_function(int(num_heads), float(rate), blocks, interpreted)
    return function(q, k, v, jnp.asarray(valid).astype(jnp.int32), jnp.asarray(seed, jnp.uint32))


def fused_self_attention(x, weights, biases, valid, seed, *, num_heads: int, rate: float,
                         blocks: tuple = BLOCKS):  # fmt: skip
    """``fused_attention`` of ``trainer.kernels.project_qkv(x, weights, biases)`` (16-bit ``x``
    [B, L, H_in], three [H_in, H] kernels in its dtype, three [H] biases), differentiated as one:
    the backward kernel writes q's, k's and v's gradients as the one [B, L, 3H] array that their
    projections' gradients read, with its columns' sums, so that no kernel joins them."""
    import jax.numpy as jnp

    shape = (*x.shape[:-1], weights[0].shape[1])
    interpreted, blocks = _checked("fused_self_attention", shape, num_heads, blocks)
    function = _self_attention_function(int(num_heads), float(rate), blocks, interpreted)
    valid = jnp.asarray(valid).astype(jnp.int32)
    return function(x, tuple(weights), tuple(biases), valid, jnp.asarray(seed, jnp.uint32))


def self_attention(layer, x, mask, training):
    """``trainer.layers.self_attention`` with ``fused_self_attention`` where it applies (JAX
    arrays, 16-bit activations, hash dropout or none, a key mask [B, 1, 1, L], shapes
    ``refusal`` accepts); elsewhere, symbolic builds included, the trainer's own
    (``trainer.pallas.fell_back``)."""
    from trainer import layers

    config, dropout = layer.config, layer.attention_dropout
    rate = config.attention_probs_dropout_prob if training else 0.0
    dtype = keras.backend.standardize_dtype(layer.query.compute_dtype)
    symbolic = isinstance(x, keras.KerasTensor)
    reason = pallas.call_refusal(dtype, rate, dropout.options, symbolic)
    if not reason and tuple(mask.shape[1:3]) != (1, 1):
        reason = f"a mask of shape {tuple(mask.shape)}, not a key mask [B, 1, 1, L]"
    if not reason:
        reason = refusal((*x.shape[:-1], config.hidden_size), config.num_attention_heads)
    if reason:
        pallas.fell_back("attention", reason, symbolic)
        return layers.default_self_attention(layer, x, mask, training)
    import jax.numpy as jnp

    global taken
    taken += 1
    seed = dropout.seed_generator.next() if rate > 0 else jnp.zeros((2,), jnp.uint32)
    valid = ops.reshape(mask, (mask.shape[0], mask.shape[-1]))
    projections = (layer.query, layer.key, layer.value)
    return fused_self_attention(
        ops.cast(x, dtype), [ops.cast(p.kernel, dtype) for p in projections],
        [ops.convert_to_tensor(p.bias) for p in projections], valid, seed,
        num_heads=config.num_attention_heads, rate=rate,
    )  # fmt: skip
