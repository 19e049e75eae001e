"""Times the feed-forward Pallas kernels (``trainer.pallas.ffn``, ``--pallas_kernels ffn``) with
each of several block choices against XLA's block, on JAX's default device, and names the
fastest whose gradients are about as close to float32 as XLA's; the block sweeps' shared flags
and report.

Usage: KERAS_BACKEND=jax python -m benchmarks.pallas_ffn [--rows R --hidden H --intermediate I]
    [--repeats N] [--time_budget_s S] [--candidates JSON] [--out FILE]

It prints ``PALLAS_FFN {json}`` per result and ``PALLAS_FFN_BEST a,b,c,d,e`` (the blocks to pass
in ``PALLAS_FFN_BLOCKS``) after each; benchmarks/gpu_session.sh runs it first on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import keras
import numpy as np

from trainer.pallas.ffn import _checked_blocks, gelu_product


def _xla_block(x, w1, b1, w2):
    """The trainer's computation of the same block in plain JAX (exact GELU), for ``sweep``."""
    import types

    import jax.numpy as jnp

    from trainer import layers

    config = types.SimpleNamespace(hidden_act="gelu")  # all that activation reads
    return jnp.matmul(layers.activation(config, jnp.matmul(x, w1) + b1), w2)


def timed_gradient(name: str, grad, arrays: tuple, exact, repeats: int) -> dict:
    """``grad(*arrays)`` (a jitted ``value_and_grad``) compiled, run once, then timed over
    ``repeats`` runs: its milliseconds a run, its loss and each gradient's largest difference from
    ``exact`` (the same gradients in float32) relative to that gradient's largest value; or the
    error that stopped it (a compiler's refusal: shared memory, registers)."""
    import jax

    try:
        out = grad(*arrays)
        jax.block_until_ready(out)
        start = time.perf_counter()
        for _ in range(repeats):
            out = grad(*arrays)
        jax.block_until_ready(out)
    except Exception as e:  # noqa: BLE001 - recorded in the result, by name
        return {"name": name, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    ms = (time.perf_counter() - start) / repeats * 1e3
    errors = [
        float(
            np.abs(np.asarray(g, np.float64) - np.asarray(e, np.float64)).max()
            / max(np.abs(np.asarray(e)).max(), 1e-30)
        )
        for g, e in zip(out[1], exact, strict=True)
    ]
    return {"name": name, "ms": round(ms, 4), "loss": float(out[0]), "gradient_errors": errors}


def sweep(rows: int, hidden: int, intermediate: int, candidates: list[tuple], repeats: int,
          time_budget_s: float | None = None):  # fmt: skip
    """Yields the milliseconds of one forward and backward pass of the block (the sum of its
    output times a fixed array, so that every gradient is formed), XLA's first, then
    ``gelu_product``'s with each of ``candidates`` (blocks as ``BLOCKS``) while
    ``time_budget_s`` allows, on JAX's default device. Each with its gradients' errors
    (``gradient_errors``: of x, w1, b1 and w2, each the largest difference from the same
    block's gradient in float32 on the same inputs, relative to that gradient's largest value)."""
    import jax
    import jax.numpy as jnp

    began = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), 5)
    dtype = jnp.bfloat16
    x = jax.random.normal(keys[0], (rows, hidden), dtype)
    w1 = (jax.random.normal(keys[1], (hidden, intermediate)) * 0.02).astype(dtype)
    b1 = (jax.random.normal(keys[2], (intermediate,)) * 0.02).astype(dtype)
    w2 = (jax.random.normal(keys[3], (intermediate, hidden)) * 0.02).astype(dtype)
    dz = jax.random.normal(keys[4], (rows, hidden), dtype)

    def gradient(block):
        loss = lambda *a: jnp.sum(block(*a).astype(jnp.float32) * dz.astype(jnp.float32))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, (0, 1, 2, 3)))

    with jax.default_matmul_precision("float32"):  # no TF32 for the reference
        exact = gradient(_xla_block)(*(a.astype(jnp.float32) for a in (x, w1, b1, w2)))[1]

    def timed(name, block):
        return timed_gradient(name, gradient(block), (x, w1, b1, w2), exact, repeats)

    yield timed("xla", _xla_block)
    for blocks in candidates:
        if time_budget_s is not None and time.perf_counter() - began > time_budget_s:
            return
        name = f"pallas {tuple(blocks)}"
        yield {**timed(name, functools.partial(gelu_product, blocks=tuple(blocks))), "blocks": list(blocks)}


CANDIDATES = [
    (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 32, 8, 4), (128, 128, 128, 8, 2),
    (128, 256, 64, 16, 3), (256, 128, 64, 16, 3), (128, 64, 64, 8, 3), (64, 64, 64, 4, 3),
]  # fmt: skip


def best(results: list[dict], margin: float = 2.0, floor: float = 1e-3) -> dict | None:
    """The fastest Pallas result of ``sweep`` whose every gradient error is within ``margin``
    times XLA's (plus ``floor``), or None: bf16-sized, where a wrong kernel is off by percents.
    Not 1.1: XLA on a CPU keeps some bf16 intermediates of the jitted block in float32 (it widens
    the operands of bf16 products there), which the kernels round as the trainer's path does."""
    xla = next((r for r in results if r["name"] == "xla" and "gradient_errors" in r), None)
    if xla is None:
        return None
    good = [
        r for r in results
        if r["name"].startswith("pallas") and "ms" in r
        and all(e <= margin * x + floor for e, x in zip(r["gradient_errors"], xla["gradient_errors"], strict=True))
    ]  # fmt: skip
    return min(good, key=lambda r: r["ms"]) if good else None


def parsed_candidates(text: str, check) -> list[tuple]:
    """``--candidates``: a JSON list, each entry made blocks by ``check(entry, source)``; a
    ValueError naming the flag or the entry otherwise."""
    try:
        listed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--candidates {text!r} is not JSON ({e})") from None
    if not isinstance(listed, list):
        raise ValueError(f"--candidates {text!r}: want a JSON list of blocks")
    return [check(c, f"--candidates entry {c!r}") for c in listed]


def report(results, prefix: str, out: str | None, facts: dict, floor: float = 1e-3) -> None:
    """Prints each result of a sweep as it comes (``PREFIX {json}``), and after each the blocks
    of ``best`` so far (``PREFIX_BEST a,b,...``, empty when none: a session reads the last such
    line, so that a sweep cut short still names one; ``floor`` as ``best``'s); with ``out``,
    rewrites there the JSON of ``facts``, the results so far and the best."""
    done = []
    for result in results:
        done.append(result)
        chosen = best(done, floor=floor)
        print(f"{prefix} " + json.dumps(result), flush=True)
        print(f"{prefix}_BEST " + (",".join(str(v) for v in chosen["blocks"]) if chosen else ""), flush=True)
        if out:
            with open(out, "w") as f:
                json.dump({**facts, "results": done, "best": chosen}, f, indent=1)


def add_sweep_flags(parser: argparse.ArgumentParser, candidates_help: str) -> None:
    """The flags every block sweep takes: --repeats, --out, --time_budget_s, --candidates."""
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--time_budget_s", type=float, default=None, help="start no candidate after this many seconds"
    )
    parser.add_argument(
        "--candidates", default=None, help=f"JSON list of {candidates_help}; default: CANDIDATES"
    )


def sweep_candidates(parser: argparse.ArgumentParser, args, check, default: list) -> list:
    """The candidates a sweep's flags name (``default`` without --candidates), each made blocks
    by ``check``; the parser's error (exit 2) for a bad entry or a backend other than JAX."""
    if keras.backend.backend() != "jax":
        parser.error(f"Keras runs on {keras.backend.backend()}: set KERAS_BACKEND=jax")
    try:
        return parsed_candidates(args.candidates, check) if args.candidates else default
    except ValueError as e:
        parser.error(str(e))


def sweep_main(parser, argv, blocks_help: str, check, default: list, run, prefix: str, facts: tuple,
               floor: float = 1e-3) -> None:  # fmt: skip
    """A block sweep's command line: ``parser`` (holding the sizes' flags) takes the flags every
    sweep takes (``blocks_help`` says what a candidate lists), parses ``argv``, and reports
    ``run(args, candidates)``'s results under ``prefix`` with the flags named in ``facts``
    (``floor`` as ``best``'s)."""
    add_sweep_flags(parser, blocks_help)
    args = parser.parse_args(argv)
    candidates = sweep_candidates(parser, args, check, default)
    report(run(args, candidates), prefix, args.out, {key: getattr(args, key) for key in facts}, floor)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256 * 128, help="batch * sequence length")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=3072)
    sweep_main(
        parser, argv, "[block_m, block_n, block_k, warps, stages]", _checked_blocks, CANDIDATES,
        lambda args, candidates: sweep(
            args.rows, args.hidden, args.intermediate, candidates, args.repeats, args.time_budget_s
        ),
        "PALLAS_FFN", ("rows", "hidden", "intermediate"),
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
