"""Run as a script under KERAS_BACKEND=jax (CPU): a mixed_bfloat16 ``TransformerLayer`` with the
trainer's feed-forward block and with ``trainer.pallas.ffn``'s Pallas products (interpret
mode), alone and with ``trainer.pallas.norm``'s kernels, on the same weights and inputs, with
and without dropout, each against the same layer in float32: outputs and gradients; and the two
kernels alone against float64. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.pallas_ffn_run
"""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np

from tests.trainer.pallas_norm_run import build, relative, run
from trainer import layers
from trainer.pallas import ffn as pallas_ffn
from trainer.pallas import norm as pallas_norm


def _ulps(got, want) -> np.ndarray:
    """|got - want| in units of the bf16 spacing at ``want`` (8 significant bits)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    spacing = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(want), 2.0**-120))) - 7)
    return np.abs(got - want) / spacing


def _bf16(values) -> np.ndarray:
    return np.asarray(jnp.asarray(np.asarray(values, np.float32), jnp.bfloat16), np.float64)


def kernels() -> dict:
    """The two kernels alone (``BLOCKS`` as set, interpret mode) on random bf16 inputs, against
    what they should write, computed in float64 from the same inputs and rounded once to bf16:
    ``h = round(round(x w1) + b1)``, ``gelu(h)``, ``dh = round((dz w2^T) gelu'(h))`` and the bias
    gradient's partial sums."""
    rows, hidden, intermediate = 128, 128, 512
    rng = np.random.default_rng(1)
    x, dz = (_bf16(rng.normal(size=(rows, hidden))) for _ in range(2))
    w1 = _bf16(rng.normal(size=(hidden, intermediate)) * 0.05)
    b1 = _bf16(rng.normal(size=intermediate) * 0.05)
    w2 = _bf16(rng.normal(size=(intermediate, hidden)) * 0.05)
    as16 = lambda a: jnp.asarray(a, jnp.bfloat16)  # noqa: E731
    blocks = pallas_ffn.BLOCKS
    h, a = pallas_ffn._forward_call(rows, hidden, intermediate, "bfloat16", blocks, True)(
        as16(x), as16(w1), as16(b1.reshape(1, -1))
    )
    dh, partial = pallas_ffn._backward_call(rows, hidden, intermediate, "bfloat16", blocks, True)(
        as16(dz), as16(w2), h
    )
    h = np.asarray(h, np.float64)
    erf = np.vectorize(math.erf)
    want_h = _bf16(_bf16(x @ w1) + b1)
    want_a = _bf16(0.5 * h * (1 + erf(h / math.sqrt(2))))
    slope = 0.5 * (1 + erf(h / math.sqrt(2))) + h * np.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    want_dh = _bf16((dz @ w2.T) * slope)
    sums = np.asarray(dh, np.float64).reshape(-1, blocks[0], intermediate).sum(axis=1)
    return {
        "blocks": list(blocks),
        "h_differing": int((h != want_h).sum()),
        "h_largest_ulps": float(_ulps(h, want_h).max()),
        "gelu_largest_ulps": float(_ulps(a, want_a).max()),
        "dh_largest_ulps": float(_ulps(dh, want_dh).max()),
        "dh_differing": int((np.asarray(dh, np.float64) != want_dh).sum()),
        "partial_sums_shape": list(partial.shape),
        "partial_sums_relative_error": float(np.abs(np.asarray(partial) - sums).max() / np.abs(sums).max()),
        "elements": rows * intermediate,
    }


def main() -> None:
    mixed, exact = build("mixed_bfloat16"), build("float32")
    variants = {
        "trainer": (layers.default_residual_norm, layers.default_feed_forward),
        "pallas_ffn": (layers.default_residual_norm, pallas_ffn.feed_forward),
        "pallas_norm_ffn": (pallas_norm.residual_norm, pallas_ffn.feed_forward),
    }
    result = {}
    for training in (True, False):
        reference_out, reference = run(exact, layers.default_residual_norm, training)
        outputs = {}
        for name, (residual_norm, feed_forward) in variants.items():
            out, grads = run(mixed, residual_norm, training, feed_forward)
            outputs[name] = out
            result[f"{name} training={training}"] = {
                # against the float32 layer: the output's largest difference, and each
                # gradient's largest difference relative to its largest value
                "output_error": float(np.abs(out - reference_out).max()),
                "gradient_errors": {g: relative(grads[g], reference[g]) for g in grads},
            }
        differ = outputs["pallas_ffn"] != outputs["trainer"]
        result[f"pallas_ffn training={training}"]["outputs_differing"] = int(differ.sum())
    result["outputs"] = int(outputs["trainer"].size)
    result["kernels"] = kernels()
    # the Pallas products where the trainer's runs: a tiny layer under mixed_bfloat16 whose
    # block shapes fit, and nowhere else
    result["refusal"] = None
    try:
        odd = jnp.zeros((96, 128), jnp.bfloat16)
        pallas_ffn.gelu_product(odd, jnp.zeros((128, 512), jnp.bfloat16), jnp.zeros(512, jnp.bfloat16),
                                jnp.zeros((512, 128), jnp.bfloat16))  # fmt: skip
    except ValueError as e:
        result["refusal"] = str(e)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
