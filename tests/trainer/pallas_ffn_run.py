"""Run as a script under KERAS_BACKEND=jax (CPU): a mixed_bfloat16 ``TransformerLayer`` with the
trainer's feed-forward block and with ``benchmarks.pallas_ffn``'s Pallas products (interpret
mode), alone and with ``benchmarks.pallas_norm``'s kernels, on the same weights and inputs, with
and without dropout, each against the same layer in float32: outputs and gradients. Prints one
JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.pallas_ffn_run
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np

from benchmarks import pallas_ffn, pallas_norm
from tests.trainer.pallas_norm_run import build, relative, run
from trainer import layers


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
