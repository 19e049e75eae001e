"""Times the residual, dropout and LayerNorm Pallas kernels (``trainer.pallas.norm``,
``--pallas_kernels norm``) with each of several block choices against the trainer's XLA path, on
JAX's default device, and names the fastest whose gradients are about as close to float32 as
XLA's.

Usage: KERAS_BACKEND=jax python -m benchmarks.pallas_norm [--batch_size B --seq_len L
    --hidden H] [--repeats N] [--time_budget_s S] [--candidates JSON] [--out FILE]

It prints ``PALLAS_NORM {json}`` per result and ``PALLAS_NORM_BEST a,b,c,d,e`` (the blocks to pass
in ``PALLAS_NORM_BLOCKS``) after each; benchmarks/gpu_session.sh runs it on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

from trainer.pallas.norm import _checked_blocks, fused_residual_norm, refusal


def _xla_sublayer(x, bias, residual, gamma, beta, *, seed, rate: float, epsilon: float):
    """The trainer's XLA path for the same sublayer end, ``trainer.layers.default_residual_norm``,
    with ``x`` as its product's output: the bias added in the activations' dtype (as the Dense
    layer adds it), ``trainer.kernels.hash_dropout`` under ``seed``, the residual sum and
    ``trainer.layers.LayerNorm``'s function (float32 inside; the reference's too). Returns the
    output's two copies."""
    from trainer import kernels, layers

    def dense(inputs):
        return inputs + bias.astype(inputs.dtype)

    def dropout(values, training):
        return kernels.hash_dropout(values, rate, seed) if training else values

    def norm(s):
        return layers._layer_norm_16(s, gamma, beta, epsilon)

    return layers.default_residual_norm(norm, dropout, residual, dense, x, True)


def sweep(batch: int, seq_len: int, hidden: int, candidates: list[tuple], repeats: int,
          rate: float = 0.1, epsilon: float = 1e-12, time_budget_s: float | None = None):  # fmt: skip
    """Yields the milliseconds of one forward and backward pass of a sublayer's end, the residual
    sum of a product's dropped output and LayerNorm (the sum of the output's two copies times
    fixed arrays, so that every gradient is formed, both copies' as in the layer), on JAX's
    default device: the trainer's XLA path first, then ``fused_residual_norm`` with each of
    ``candidates`` (blocks as ``BLOCKS``; those the rows do not fit, with the refusal as their
    error) while ``time_budget_s`` allows. Each with its gradients' errors (``gradient_errors``:
    of the product, the bias, the residual, gamma and beta, each against the XLA path's in
    float32 with the same dropout mask, as ``pallas_ffn.timed_gradient``)."""
    import jax
    import jax.numpy as jnp

    from benchmarks import pallas_ffn

    began = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), 7)
    shape = (batch, seq_len, hidden)
    x, residual, dy, dr = (jax.random.normal(key, shape, jnp.bfloat16) for key in keys[:4])
    bias = (jax.random.normal(keys[4], (hidden,)) * 0.05).astype(jnp.bfloat16)
    gamma = 1.0 + jax.random.normal(keys[5], (hidden,)) * 0.1
    beta = jax.random.normal(keys[6], (hidden,)) * 0.1
    seed = jnp.asarray([7, 11], jnp.uint32)
    arrays = (x, bias, residual, gamma, beta)

    def gradient(sublayer):
        def loss(*arrays):
            y, y2 = sublayer(*arrays)
            f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
            return jnp.sum(f32(y) * f32(dy)) + jnp.sum(f32(y2) * f32(dr))

        return jax.jit(jax.value_and_grad(loss, tuple(range(len(arrays)))))

    xla = functools.partial(_xla_sublayer, seed=seed, rate=rate, epsilon=epsilon)
    exact = gradient(xla)(*(a.astype(jnp.float32) for a in arrays))[1]

    def timed(name, sublayer):
        return pallas_ffn.timed_gradient(name, gradient(sublayer), arrays, exact, repeats)

    yield timed("xla", xla)
    for blocks in candidates:
        if time_budget_s is not None and time.perf_counter() - began > time_budget_s:
            return
        name = f"pallas {tuple(blocks)}"
        reason = refusal(shape, tuple(blocks))
        if reason:
            yield {"name": name, "error": reason, "blocks": list(blocks)}
            continue
        fused = functools.partial(
            fused_residual_norm, seed=seed, rate=rate, epsilon=epsilon, blocks=tuple(blocks)
        )
        yield {**timed(name, fused), "blocks": list(blocks)}


# The first is the kernels' default, under which an H100 ran the backward near 1.2 TB/s and the
# forward near 2 (BERT-base, batch 256). Fewer rows or warps a program give more programs and
# fewer values a thread; the backward's rows at a time bound its registers, and its rows a
# program set how many partial sums it writes (R / rows of [H] float32, three of them): 8 rows
# a program run 4,096 programs and write 38 MB of them, 32 rows 1,024 programs and 9 MB.
CANDIDATES = [
    (16, 8, 32, 8, 8), (16, 8, 8, 8, 8), (16, 8, 16, 8, 8), (16, 8, 16, 16, 16),
    (16, 8, 32, 16, 16), (16, 8, 8, 8, 4), (16, 8, 32, 4, 4), (16, 8, 64, 8, 8),
    (8, 4, 32, 8, 8), (16, 4, 32, 8, 8), (32, 8, 32, 8, 8), (8, 4, 16, 4, 4),
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from benchmarks import pallas_ffn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=768)
    # floor: the kernels round the output's two copies' summed gradient to bf16 before the sums
    # for beta and gamma, as autodiff sums a 16-bit tensor read twice on a GPU; XLA on a CPU keeps
    # that sum in float32, and its beta gradient there is exact. One bf16 rounding is 2^-8.
    pallas_ffn.sweep_main(
        parser, argv, "[rows, warps, backward_rows, backward_chunk_rows, backward_warps]", _checked_blocks,
        CANDIDATES,
        lambda args, candidates: sweep(
            args.batch_size, args.seq_len, args.hidden, candidates, args.repeats,
            time_budget_s=args.time_budget_s,
        ),
        "PALLAS_NORM", ("batch_size", "seq_len", "hidden"), floor=2.0**-8,
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
