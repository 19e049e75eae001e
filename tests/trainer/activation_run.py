"""Run as a script under KERAS_BACKEND=tensorflow or jax: the gradient of ``trainer.layers.activation``
against the float64 derivative of Hugging Face's formulas, and what the backward pass keeps.
Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.activation_run
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from scipy.special import erf

from trainer.config import BertConfig
from trainer.layers import activation

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def derivative(hidden_act: str, x: np.ndarray) -> np.ndarray:
    """d/dx of the exact GELU x Phi(x), or of HF's tanh approximation, in float64."""
    if hidden_act == "gelu":
        return 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)


def gradient(fn, x: np.ndarray) -> np.ndarray:
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).astype("float32").sum())(x), np.float32)
    import tensorflow as tf

    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        y = tf.reduce_sum(tf.cast(fn(v), tf.float32))
    return tf.cast(tape.gradient(y, v), tf.float32).numpy()


def main() -> None:
    result = {"backend": keras.backend.backend()}
    x = np.linspace(-8, 8, 4001).astype(np.float32)
    x_bf16 = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32"))
    for hidden_act in ("gelu", "gelu_new"):
        config = BertConfig.from_preset("tiny", vocab_size=10, hidden_act=hidden_act)
        fn = lambda v, config=config: activation(config, v)  # noqa: E731
        g32 = gradient(fn, x)
        g16 = gradient(lambda v, fn=fn: fn(keras.ops.cast(v, "bfloat16")), x_bf16)
        result[hidden_act] = {
            "float32_max_error": float(np.abs(g32 - derivative(hidden_act, x.astype(np.float64))).max()),
            # bf16 input and upstream gradient: the result is the exact derivative rounded to bf16
            "bfloat16_max_relative_error": float(
                np.max(
                    np.abs(g16 - derivative(hidden_act, x_bf16.astype(np.float64)))
                    / np.maximum(np.abs(derivative(hidden_act, x_bf16.astype(np.float64))), 1e-3)
                )
            ),
        }
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        # What the backward pass of Dense -> activation keeps of size [tokens, intermediate].
        tokens, hidden, inner = 64, 16, 96
        w = jnp.full((hidden, inner), 0.01, jnp.float32)
        h = jnp.ones((tokens, hidden), jnp.bfloat16)
        for hidden_act in ("gelu", "gelu_new"):
            config = BertConfig.from_preset("tiny", vocab_size=10, hidden_act=hidden_act)
            _, vjp = jax.vjp(lambda w, config=config: activation(config, h @ w.astype(jnp.bfloat16)), w)
            kept = [
                str(a.dtype)
                for a in jax.tree_util.tree_leaves(vjp)
                if getattr(a, "size", 0) == tokens * inner
            ]
            result[hidden_act]["residuals"] = kept
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
