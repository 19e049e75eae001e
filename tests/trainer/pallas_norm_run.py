"""Run as a script under KERAS_BACKEND=jax (CPU): a mixed_bfloat16 ``TransformerLayer`` with the
trainer's residual, dropout and LayerNorm, and with ``trainer.pallas.norm``'s fused kernel
(Pallas interpret mode), on the same weights and inputs, with and without dropout: their
outputs and gradients. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.pallas_norm_run
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import keras
import numpy as np

from trainer import layers
from trainer.config import BertConfig, KernelOptions
from trainer.pallas import norm as pallas_norm


def build(policy: str):
    """A tiny TransformerLayer under ``policy``, its variables' values and a batch: the same
    weights and inputs for every policy."""
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    config = BertConfig.from_preset("tiny", vocab_size=50)
    layer = layers.TransformerLayer(config, KernelOptions(attention="xla", dropout_rng="hash"))
    layer.build()
    rng = np.random.default_rng(0)
    batch, seq_len, hidden = 4, 32, config.hidden_size  # 128 rows: 8 blocks of 16, 4 of 32
    x = jnp.asarray(rng.normal(size=(batch, seq_len, hidden)), jnp.bfloat16)
    return layer, x.astype(keras.config.dtype_policy().compute_dtype), jnp.ones((batch, 1, 1, seq_len), bool)


def run(setup, residual_norm, training, feed_forward=layers.default_feed_forward):
    """Output and gradients (each variable's, by path without the layer's name, then x's), with
    ``residual_norm`` and ``feed_forward`` in the layer."""
    layer, x, mask = setup
    layers.residual_norm, layers.feed_forward = residual_norm, feed_forward
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    weights = jnp.linspace(-1.0, 1.0, x.shape[-1])

    def loss(trainable, x):
        # Both copies of the output read, with different weights: the fused backward kernel sums
        # their gradients itself.
        (out, residual), _ = layer.stateless_call(trainable, non_trainable, x, mask, training=training)
        cast = lambda t: t.astype(jnp.float32)  # noqa: E731
        return jnp.sum(cast(out) * weights) + jnp.sum(cast(residual) * weights[::-1] * 0.5), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(trainable, x)
    names = [v.path.split("/", 1)[1] for v in layer.trainable_variables] + ["x"]
    return np.asarray(out, np.float32), dict(
        zip(names, (np.asarray(g, np.float64) for g in (*grads[0], grads[1])), strict=True)
    )


def relative(got, want) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def main() -> None:
    mixed, exact = build("mixed_bfloat16"), build("float32")
    result = {}
    for training in (True, False):
        out, grads = run(mixed, layers.default_residual_norm, training)
        fused_out, fused_grads = run(mixed, pallas_norm.residual_norm, training)
        _, reference = run(exact, layers.default_residual_norm, training)
        differ = fused_out != out
        result[f"training={training}"] = {
            "outputs_differing": int(differ.sum()),
            "outputs": int(out.size),
            # in units of the bf16 spacing at each value (8 significant bits)
            "largest_output_ulps": float(
                (np.abs(fused_out - out) / 2.0 ** (np.floor(np.log2(np.abs(out))) - 7))[differ].max()
            )
            if differ.any()
            else 0.0,
            "gradient_relative_errors": {name: relative(fused_grads[name], grads[name]) for name in grads},
            # the dense layers' bias gradients, both against the float32 layer's
            "bias_errors_against_float32": {
                name: {
                    "trainer": relative(grads[name], reference[name]),
                    "pallas": relative(fused_grads[name], reference[name]),
                }
                for name in ("attention_output/bias", "output/bias")
            },
        }
    try:  # rows that the kernels' grids would not cover whole are refused, not dropped
        odd = jnp.zeros((3, 10, 128), jnp.bfloat16)
        pallas_norm.fused_residual_norm(
            odd,
            odd[0, 0],
            odd,
            jnp.ones(128),
            jnp.zeros(128),
            jnp.zeros(2, jnp.uint32),
            rate=0.1,
            epsilon=1e-12,
        )
        result["refusal"] = None
    except ValueError as e:
        result["refusal"] = str(e)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
