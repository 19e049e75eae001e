"""Times a layer's self-attention with the Pallas kernels (``trainer.pallas.attention``,
``--pallas_kernels attention``) with each of several block choices, against the same with cuDNN's
attention and with the trainer's XLA attention, on JAX's default device, and names the fastest
whose gradients are about as close to float32 as XLA's.

Usage: KERAS_BACKEND=jax python -m benchmarks.pallas_attention [--batch_size B --seq_len L
    --heads N --head_size D] [--repeats N] [--time_budget_s S] [--candidates JSON] [--out FILE]

It prints ``PALLAS_ATTENTION {json}`` per result and ``PALLAS_ATTENTION_BEST a,b,c,d`` (the blocks
to pass in ``PALLAS_ATTENTION_BLOCKS``) after each; benchmarks/gpu_session.sh runs it on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

from trainer.pallas.attention import _checked_blocks, fitted, fused_self_attention


def _trainer_attention(implementation: str, num_heads: int, rate: float):
    """The trainer's attention (``trainer.layers.attention``) of q, k, v [B, L, H], a key
    mask [B, 1, 1, L] and a seed, with ``implementation`` ``xla`` (hash dropout of the
    probabilities under that seed) or ``cudnn`` (cuDNN's own dropout), for ``sweep``."""
    import types

    from trainer import kernels, layers
    from trainer.config import KernelOptions

    def run(q, k, v, mask, seed):
        head_size = q.shape[-1] // num_heads
        layer = types.SimpleNamespace(  # all that attention reads of a layer
            config=types.SimpleNamespace(
                num_attention_heads=num_heads, head_size=head_size, hidden_size=q.shape[-1],
                attention_probs_dropout_prob=rate,
            ),
            kernel_options=KernelOptions(attention=implementation, dropout_rng="hash"),
            attention_dropout=lambda probs, training: kernels.hash_dropout(probs, rate, seed),
        )  # fmt: skip
        layer.attention_dropout.static_seed = 1
        return layers.attention(layer, q, k, v, mask, True)

    return run


def sweep(batch: int, seq_len: int, num_heads: int, head_size: int, candidates: list[tuple], repeats: int,
          rate: float = 0.1, time_budget_s: float | None = None):  # fmt: skip
    """Yields the milliseconds of one forward and backward pass of a layer's self-attention (the
    query, key and value projections, then attention with dropout on its probabilities; the sum
    of the context times a fixed array, so that every gradient is formed) on JAX's default
    device: with cuDNN's attention (the trainer's default on a GPU; its own dropout mask, so no
    errors), with the trainer's XLA attention and hash dropout, then ``fused_self_attention``
    (the runs' kernels) with each of ``candidates`` (blocks as ``BLOCKS``; those that do not fit
    the shapes, with the refusal as their error) while ``time_budget_s`` allows. XLA's and the
    kernels' with their gradients' errors (``gradient_errors``: of x, the three kernels and the
    query's and value's biases, each against the XLA path's in float32 with the same dropout
    mask, as ``pallas_ffn.timed_gradient``; the key bias is held fixed, its exact gradient being
    zero: softmax ignores a shift shared by every key)."""
    import jax
    import jax.numpy as jnp

    from benchmarks import pallas_ffn
    from trainer import kernels

    began = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), 9)
    hidden = num_heads * head_size
    x, dz = (jax.random.normal(key, (batch, seq_len, hidden), jnp.bfloat16) for key in keys[:2])
    weights = [(jax.random.normal(key, (hidden, hidden)) * 0.05).astype(jnp.bfloat16) for key in keys[2:5]]
    bq, bk, bv = (jax.random.normal(key, (hidden,)) * 0.05 for key in keys[5:8])
    # every example's keys valid up to a length of its own, from a quarter of the sequence up
    lengths = jax.random.randint(keys[8], (batch,), seq_len // 4, seq_len + 1)
    mask = (jnp.arange(seq_len)[None, :] < lengths[:, None])[:, None, None, :]
    seed = jnp.asarray([7, 11], jnp.uint32)
    arrays = (x, *weights, bq, bv)

    def trainer(implementation):
        attention = _trainer_attention(implementation, num_heads, rate)

        def block(x, wq, wk, wv, bq, bv):
            q, k, v = kernels.project_qkv(x, (wq, wk, wv), (bq, bk.astype(bq.dtype), bv))
            return attention(q, k, v, mask, seed)

        return block

    def gradient(block):
        def loss(*arrays):
            return jnp.sum(block(*arrays).astype(jnp.float32) * dz.astype(jnp.float32))

        return jax.jit(jax.value_and_grad(loss, tuple(range(len(arrays)))))

    with jax.default_matmul_precision("float32"):  # no TF32 for the reference
        exact = gradient(trainer("xla"))(*(a.astype(jnp.float32) for a in arrays))[1]

    def timed(name, block, compared=True):
        result = pallas_ffn.timed_gradient(name, gradient(block), arrays, exact, repeats)
        if not compared:
            result.pop("gradient_errors", None)  # another function: cuDNN drops other elements
        return result

    yield timed("cudnn", trainer("cudnn"), compared=False)
    yield timed("xla", trainer("xla"))
    valid = mask.reshape(batch, seq_len)
    for blocks in candidates:
        if time_budget_s is not None and time.perf_counter() - began > time_budget_s:
            return

        def fused(x, wq, wk, wv, bq, bv, blocks=tuple(blocks)):
            return fused_self_attention(
                x, (wq, wk, wv), (bq, bk, bv), valid, seed, num_heads=num_heads, rate=rate, blocks=blocks
            )

        # the blocks the kernels take at this length (cut to the sequence), which a session passes on
        yield {**timed(f"pallas {tuple(blocks)}", fused), "blocks": list(fitted(tuple(blocks), seq_len))}


# Compiled for an H100 (BERT-base, batch 256, seq 128), each of these uses the warp-group products
# without spilling registers; (128, 4) forward, (64, 8), (32, 4) and (16, 4) backward spill.
CANDIDATES = [
    (128, 8, 128, 8), (64, 4, 128, 8), (64, 8, 128, 8), (32, 4, 128, 8),
    (128, 8, 32, 8), (64, 4, 32, 8), (64, 8, 32, 8), (32, 4, 32, 8),
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from benchmarks import pallas_ffn
    from trainer.distribute import keep_cudnn_out_of_command_buffers

    # Before JAX starts its GPU backend: cuDNN's attention, one of the candidates, aborted the
    # process inside CUDA graphs (as in trainer.task, which adds the same flag).
    keep_cudnn_out_of_command_buffers()

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head_size", type=int, default=64)
    pallas_ffn.sweep_main(
        parser, argv, "[block_q, warps, backward_block_q, backward_warps]", _checked_blocks, CANDIDATES,
        lambda args, candidates: sweep(
            args.batch_size, args.seq_len, args.heads, args.head_size, candidates, args.repeats,
            time_budget_s=args.time_budget_s,
        ),
        "PALLAS_ATTENTION", ("batch_size", "seq_len", "heads", "head_size"),
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
