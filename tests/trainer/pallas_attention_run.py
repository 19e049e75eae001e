"""Run as a script under KERAS_BACKEND=jax (CPU), with PALLAS_ATTENTION_BLOCKS set to blocks that
split its sequence of 32: a mixed_bfloat16 ``TransformerLayer`` with the trainer's XLA attention
(hash dropout) and with ``trainer.pallas.attention``'s kernels (Pallas interpret mode), on
the same weights, inputs and seeds, with and without dropout, some keys masked: outputs and
gradients, each against the same layer in float32 too (without dropout the trainer's
attention is ``keras.ops.dot_product_attention``, another rounding); then the function alone,
by the trainer's and by the kernels, and which probabilities the kernels drop. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.pallas_attention_run
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import pallas_attention as attention_sweep
from tests.trainer.pallas_norm_run import build, relative, run
from trainer import kernels, layers
from trainer.pallas import attention as pallas_attention


def _masked(setup):
    """``setup`` with the keys of example 1 masked from position 20 and of example 3 from 9."""
    layer, x, mask = setup
    lengths = jnp.asarray([32, 20, 32, 9])
    return layer, x, (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[:, None, None, :]


def _layer(setup, self_attention, training):
    layers.self_attention = self_attention
    try:
        return run(setup, layers.default_residual_norm, training)
    finally:
        layers.self_attention = layers.default_self_attention


def function() -> dict:
    """The attention alone at B=2, L=64, 4 heads of 32: the trainer's XLA attention with hash
    dropout against ``fused_attention``, context and gradients, and the fraction of the
    probabilities' positions dropped (from the context of a one-hot value per key)."""
    batch, seq_len, heads, head_size = 2, 64, 4, 32
    rng = np.random.default_rng(3)
    q, k, v, dz = (
        jnp.asarray(rng.normal(size=(batch, seq_len, heads * head_size)), jnp.bfloat16) for _ in range(4)
    )
    mask = (jnp.arange(seq_len)[None, :] < jnp.asarray([64, 40])[:, None])[:, None, None, :]
    seed, rate = jnp.asarray([3, 5], jnp.uint32), 0.1
    trainer = attention_sweep._trainer_attention("xla", heads, rate)

    def fused(q, k, v, mask, seed):
        valid = mask.reshape(batch, seq_len)
        return pallas_attention.fused_attention(q, k, v, valid, seed, num_heads=heads, rate=rate)

    def outputs(f, *inputs):
        context, vjp = jax.vjp(lambda q, k, v: f(q, k, v, mask, seed), *inputs)
        return [np.asarray(a, np.float64) for a in (context, *vjp(dz.astype(context.dtype)))]

    out = {"trainer": outputs(trainer, q, k, v), "pallas": outputs(fused, q, k, v)}
    # Without dropout (evaluation's rate 0, where the trainer takes keras.ops.dot_product_attention,
    # another rounding): the context and gradients of each against the trainer's in float32.
    trainer0 = attention_sweep._trainer_attention("xla", heads, 0.0)

    def fused0(q, k, v, mask, seed):
        valid = mask.reshape(batch, seq_len)
        return pallas_attention.fused_attention(q, k, v, valid, seed, num_heads=heads, rate=0.0)

    exact = outputs(trainer0, *(a.astype(jnp.float32) for a in (q, k, v)))
    without_dropout = {
        name: [relative(a, e) for a, e in zip(outputs(f, q, k, v), exact, strict=True)]
        for name, f in (("trainer", trainer0), ("pallas", fused0))
    }
    # Queries of zeros attend every key alike (probability 1 / L); with values one-hot per key
    # the context's columns say which probabilities were dropped (0) or kept. Head n's D value
    # columns are one-hot for keys s = (n % 2) * D to s + D - 1.
    start = lambda n: (n % 2) * head_size  # noqa: E731
    hot = jnp.concatenate(
        [jnp.eye(seq_len, head_size, k=-start(n), dtype=jnp.bfloat16) for n in range(heads)], 1
    )
    zeros = jnp.zeros((batch, seq_len, heads * head_size), jnp.bfloat16)
    full = jnp.ones((batch, 1, 1, seq_len), bool)
    dropped = np.asarray(fused(zeros, zeros, jnp.tile(hot[None], (batch, 1, 1)), full, seed)) == 0
    bits = np.asarray(kernels.hash_bits((batch, heads, seq_len, seq_len), seed))
    below = bits < np.uint32(round(rate * 2**32))  # where hash_dropout drops
    pairs = np.stack([dropped[..., n * head_size : (n + 1) * head_size] for n in range(heads)], 1)
    expected = np.stack([below[:, n, :, start(n) : start(n) + head_size] for n in range(heads)], 1)
    return {
        "differing": [int((p != t).sum()) for p, t in zip(out["pallas"], out["trainer"], strict=True)],
        "largest_relative": [relative(p, t) for p, t in zip(out["pallas"], out["trainer"], strict=True)],
        "elements": int(out["trainer"][0].size),
        "without_dropout_against_float32": without_dropout,
        "dropped_fraction": float(pairs.mean()),
        "dropped_as_hash_bits": bool((pairs == expected).all()),
    }


def hook(mixed, exact) -> dict:
    """``pallas_attention.self_attention`` called as the layer calls it: whether it advances the
    attention dropout's seed as the trainer's path does, and which inputs it leaves to the
    trainer's path (the number of calls that took the kernels, of each kind of input)."""
    layer, x, mask = mixed
    generator = layer.attention_dropout.seed_generator
    start = np.asarray(generator.state.value)
    states = {}
    for name, f in (("trainer", layers.default_self_attention), ("pallas", pallas_attention.self_attention)):
        generator.state.assign(start)
        f(layer, x, mask, True)
        states[name] = np.asarray(generator.state.value)
    taken = {}

    def count(name, setup, mask, training=True):
        before = pallas_attention.taken
        pallas_attention.self_attention(setup[0], setup[1], mask, training)
        taken[name] = pallas_attention.taken - before

    count("bf16", mixed, mask)
    count("float32 layer", exact, exact[2])
    count(
        "a [B, 1, L, L] mask",
        mixed,
        jnp.broadcast_to(mask, (mask.shape[0], 1, mask.shape[-1], mask.shape[-1])),
    )
    options = [d.options for d in (layer.attention_dropout, layer.hidden_dropout)]
    layer.attention_dropout.options = dataclasses.replace(options[0], dropout_rng="keras")
    count("Keras dropout masks", mixed, mask)
    count("Keras dropout masks, no dropout", mixed, mask, training=False)
    layer.attention_dropout.options = options[0]
    return {
        "seed_advanced": bool((states["trainer"] != start).any()),
        "seed_alike": bool((states["trainer"] == states["pallas"]).all()),
        "taken": taken,
    }


def main() -> None:
    pallas_attention.taken = 0
    mixed, exact = _masked(build("mixed_bfloat16")), _masked(build("float32"))
    result = {}
    for training in (True, False):
        out, grads = _layer(mixed, layers.default_self_attention, training)
        fused_out, fused_grads = _layer(mixed, pallas_attention.self_attention, training)
        reference_out, reference = _layer(exact, layers.default_self_attention, training)
        result[f"training={training}"] = {
            "outputs_differing": int((fused_out != out).sum()),
            "outputs": int(out.size),
            "gradient_relative_errors": {name: relative(fused_grads[name], grads[name]) for name in grads},
            # against the float32 layer, the trainer's and the kernels': the output's largest
            # difference, and each gradient's relative to its largest value
            "output_against_float32": [float(np.abs(o - reference_out).max()) for o in (out, fused_out)],
            "against_float32": {
                name: [relative(grads[name], reference[name]), relative(fused_grads[name], reference[name])]
                for name in grads
            },
        }
    result["layers_traced"] = pallas_attention.taken
    result["hook"] = hook(mixed, exact)
    result["blocks"] = list(pallas_attention.BLOCKS)
    result["function"] = function()
    result["refusals"] = {}
    for shape, heads in (((2, 48, 128), 2), ((2, 32, 96), 2), ((2, 256, 128), 2), ((2, 32, 256), 2)):
        odd = jnp.zeros(shape, jnp.bfloat16)
        try:
            pallas_attention.fused_attention(odd, odd, odd, jnp.ones(shape[:2], bool), jnp.zeros(2, jnp.uint32),
                                             num_heads=heads, rate=0.1)  # fmt: skip
            result["refusals"][str(shape)] = None
        except ValueError as e:
            result["refusals"][str(shape)] = str(e)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
