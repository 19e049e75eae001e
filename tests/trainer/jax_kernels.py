"""Run as a script with KERAS_BACKEND=jax on CPU: checks of ``trainer.kernels`` that need the JAX
backend. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.jax_kernels

- ``lower``: lowers a bf16 ``TransformerLayer``'s training forward and backward for CUDA (no GPU
  here: JAX's cuDNN version and compute-capability probes are answered as on an H100 with cuDNN
  9.10, the only change) and reports the cuDNN custom calls with their dropout settings.
- ``refuse``: ``attention="cudnn"`` on this CPU-only JAX must fail, and ``auto`` must fall back.
- ``train``: two AdamW steps of a tiny model with each dropout generator, twice each.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import numpy as np


def _layer_and_inputs(options, *, seq_len: int = 16, batch: int = 2):
    import keras

    from trainer.config import BertConfig
    from trainer.layers import TransformerLayer

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(7)
    config = BertConfig.from_preset("tiny", vocab_size=97)
    layers = [TransformerLayer(config, options, name=f"layer_{i}") for i in range(2)]
    for layer in layers:
        layer.build()
    x = np.random.default_rng(0).normal(size=(batch, seq_len, config.hidden_size)).astype(np.float32)
    mask = np.ones((batch, 1, 1, seq_len), bool)
    mask[1, ..., seq_len // 2 :] = False  # second sequence half padding
    return layers, x, mask


def _loss_fn(layers):
    import jax.numpy as jnp

    def loss(trainable, non_trainable, x, mask):
        residual = None
        for layer, tv, ntv in zip(layers, trainable, non_trainable, strict=True):
            (x, residual), _ = layer.stateless_call(tv, ntv, x, mask, training=True, residual=residual)
        return jnp.sum(x.astype(jnp.float32))

    return loss


def lower() -> dict:
    import jax
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa

    from trainer.kernels import KernelOptions

    cudnn_fa.check_cudnn_version = lambda: 91000
    cudnn_fa.check_compute_capability = lambda capability: True
    cudnn_fa.is_cuda_compute_capability_equal = lambda capability: False
    out = {}
    for attention in ("cudnn", "xla"):
        layers, x, mask = _layer_and_inputs(KernelOptions(attention=attention))
        trainable = [[v.value for v in layer.trainable_variables] for layer in layers]
        non_trainable = [[v.value for v in layer.non_trainable_variables] for layer in layers]
        grad = jax.jit(jax.grad(_loss_fn(layers)))
        text = grad.trace(trainable, non_trainable, x, mask).lower(lowering_platforms=("cuda",)).as_text()
        settings = [
            {"dropout_rate": float(rate), "seed": int(seed)}
            for rate, seed in re.findall(r"dropout_rate\\22: ([0-9.e-]+), \\22seed\\22: (\d+)", text)
        ]
        out[attention] = {
            "calls": re.findall(r"custom_call @(__cudnn\$fmha\w+)", text),
            "settings": settings,
            "static_seeds": [layer.attention_dropout.static_seed for layer in layers],
            # Values of the attention probabilities' shape [B, N, L, L] (B 2, N 2, L 16) in the
            # program; the mask's bias is [B, 1, L, L].
            "probability_shaped_values": len(re.findall(r"tensor<2x2x16x16x", text)),
        }
    return out


def refuse() -> dict:
    import logging

    import jax

    from trainer import kernels
    from trainer.config import BertConfig, KernelOptions

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    kernels.log.addHandler(handler)
    kernels.log.setLevel(logging.INFO)

    def run(attention: str) -> dict:
        layers, x, mask = _layer_and_inputs(KernelOptions(attention=attention))
        trainable = [[v.value for v in layer.trainable_variables] for layer in layers]
        non_trainable = [[v.value for v in layer.non_trainable_variables] for layer in layers]
        try:
            value = jax.jit(_loss_fn(layers))(trainable, non_trainable, x, mask)
            return {"ok": bool(np.isfinite(float(value)))}
        except Exception as e:  # noqa: BLE001 - the message is the result
            return {"error": f"{type(e).__name__}: {e}"}

    out = {"cudnn": run("cudnn"), "auto": run("auto")}
    # auto on this CPU: refused before trying, with the reason logged.
    out["auto_log"] = list(records)
    config = BertConfig.from_preset("tiny", vocab_size=97)
    options = KernelOptions()
    out["resolve_cpu"] = kernels.resolve(options, config=config, seq_len=16, dtype="bfloat16").attention
    # As if on a capable GPU: the trace-time attempt and the compile probe fail here (no cuDNN),
    # so auto falls back to XLA in both places, with a warning.
    kernels.auto_refusal = lambda dtype: None
    records.clear()
    out["auto_forced_try"] = run("auto")
    out["auto_forced_try_log"] = list(records)
    records.clear()
    out["resolve_forced_try"] = kernels.resolve(
        options, config=config, seq_len=16, dtype="bfloat16"
    ).attention
    out["resolve_forced_try_log"] = list(records)
    # cudnn with float32 activations: refused, naming the flags.
    keras_policy_error = None
    try:
        kernels.use_cudnn_attention(KernelOptions(attention="cudnn"), "float32")
    except ValueError as e:
        keras_policy_error = str(e)
    out["cudnn_float32"] = keras_policy_error
    return out


def train() -> dict:
    import keras

    from tests.trainer.batches import CONFIG, uneven_batch
    from trainer.bert_model import BertPretrainingModel
    from trainer.config import TrainConfig
    from trainer.kernels import KernelOptions
    from trainer.optimization import create_optimizer

    config = dataclasses.replace(CONFIG, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)

    def run(dropout_rng: str) -> tuple[dict, list]:
        keras.mixed_precision.set_global_policy("float32")
        keras.utils.set_random_seed(3)
        model = BertPretrainingModel(config, KernelOptions(dropout_rng=dropout_rng))
        model.compile(
            optimizer=create_optimizer(
                TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=100), model
            )
        )
        features, labels = uneven_batch()
        history = model.fit(features, labels, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return model.get_named_weights(), history.history["loss"]

    out = {}
    weights = {}
    for rng in ("keras", "rbg", "hash", "auto"):
        first, losses = run(rng)
        second, losses_again = run(rng)
        weights[rng] = first
        out[rng] = {
            "losses": losses,
            "rerun_max_diff": max(float(np.max(np.abs(first[k] - second[k]))) for k in first),
            "rerun_losses": losses_again,
        }
    out["auto_vs_hash_max_diff"] = max(
        float(np.max(np.abs(weights["auto"][k] - weights["hash"][k]))) for k in weights["hash"]
    )
    for rng in ("rbg", "hash"):
        out[f"keras_vs_{rng}_max_diff"] = max(
            float(np.max(np.abs(weights["keras"][k] - weights[rng][k]))) for k in weights["keras"]
        )
    return out


if __name__ == "__main__":
    sys.modules["tensorflow"] = None  # as on the GPU machine: no TensorFlow
    # refuse and train first: lower() replaces JAX's cuDNN probes for the rest of the process.
    print("RESULT " + json.dumps({"refuse": refuse(), "train": train(), "lower": lower()}))
