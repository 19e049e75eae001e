"""Run as a script under KERAS_BACKEND=tensorflow or jax: the gradient of ``trainer.layers.activation``
against the float64 derivative of Hugging Face's formulas; ``trainer.layers.LayerNorm`` under
mixed_bfloat16 against float64 and against Keras' ``LayerNormalization``; and what their backward
passes keep. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.activation_run
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from scipy.special import erf

from trainer.config import BertConfig
from trainer.layers import LayerNorm, activation

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
            # The lowered gradient: how many tanh it computes (XLA's CSE would merge a tanh of
            # the derivative with the forward pass's and keep its float32 values).
            loss = lambda v, config=config: activation(config, v).astype(jnp.float32).sum()  # noqa: E731
            text = jax.jit(jax.value_and_grad(loss)).lower(h @ w.astype(jnp.bfloat16)).as_text()
            result[hidden_act]["tanh_ops"] = text.count("stablehlo.tanh")
    result["layer_norm"] = layer_norm_errors()
    print("RESULT " + json.dumps(result), flush=True)


def layer_norm_errors() -> dict:
    """Output and gradients of LayerNorm on bf16 input, ours and Keras', against float64."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    shape = (4, 16, 96)
    x = keras.ops.cast(rng.normal(1.0, 3.0, size=shape).astype(np.float32), "bfloat16")
    dy = keras.ops.cast(rng.normal(size=shape).astype(np.float32), "bfloat16")
    gamma, beta = rng.normal(1, 0.2, 96).astype(np.float32), rng.normal(0, 0.2, 96).astype(np.float32)
    out = {}
    layers = {"ours": LayerNorm(epsilon=1e-12), "keras": keras.layers.LayerNormalization(epsilon=1e-12)}
    for name, layer in layers.items():
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        out[name] = [np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")), np.float64)
                     for t in _layer_vjp(layer, x, dy)]  # fmt: skip
    keras.mixed_precision.set_global_policy("float32")
    xd, dyd = (
        np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")), np.float64) for t in (x, dy)
    )
    mean = xd.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((xd - mean) ** 2).mean(-1, keepdims=True) + 1e-12)
    xhat = (xd - mean) * rstd
    g = dyd * gamma
    exact = {
        "y": xhat * gamma + beta,
        "dx": rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)),
        "dgamma": (dyd * xhat).sum((0, 1)),
        "dbeta": dyd.sum((0, 1)),
    }
    result = {
        name: {
            k: float(np.abs(v - exact[k]).max() / np.abs(exact[k]).max())
            for k, v in zip(exact, values, strict=True)
        }
        for name, values in out.items()
    }
    if BACKEND == "jax":
        import jax

        layer = layers["ours"]
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        _, vjp = jax.vjp(
            lambda tv: layer.stateless_call(tv, [], x)[0], [v.value for v in layer.trainable_variables]
        )
        keras.mixed_precision.set_global_policy("float32")
        size = int(np.prod(shape))
        result["residuals"] = [
            str(a.dtype) for a in jax.tree_util.tree_leaves(vjp) if getattr(a, "size", 0) == size
        ]
        # Its lowered gradient passes the forward pass's statistics through a barrier.
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        trainable = [v.value for v in layer.trainable_variables]
        loss = lambda x: layer.stateless_call(trainable, [], x)[0].astype("float32").sum()  # noqa: E731
        text = jax.jit(jax.grad(loss)).lower(x).as_text()
        keras.mixed_precision.set_global_policy("float32")
        result["gradient_barriers"] = text.count("stablehlo.optimization_barrier")
    return result


def _layer_vjp(layer, x, dy):
    """(y, dx, dgamma, dbeta) of ``layer`` at ``x`` for the output gradient ``dy``."""
    if BACKEND == "jax":
        import jax

        def f(tv, x):
            return layer.stateless_call(tv, [], x)[0]

        y, vjp = jax.vjp(f, [v.value for v in layer.trainable_variables], x)
        (dgamma, dbeta), dx = vjp(dy)
        return y, dx, dgamma, dbeta
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    dx, dgamma, dbeta = tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy)
    return y, dx, dgamma, dbeta


if __name__ == "__main__":
    main()
