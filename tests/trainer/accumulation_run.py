"""Run as a script under KERAS_BACKEND=tensorflow or jax: the update of gradient accumulation
against one whole batch. Prints one JSON line, ``RESULT {...}``.

Usage: python -m tests.trainer.accumulation_run

From the same weights, a batch of 8 whose examples hold unequal numbers of masked positions
(so every split into micro-batches or replicas has unequal MLM denominators) trains two AdamW
steps (global-norm clipping, weight decay): once whole (the reference), then with 2 and 4
micro-batches, and with 2 micro-batches on 2 replicas. Then plain SGD, alone and behind a
loss-scale optimizer, whole and with 4 micro-batches: there the update is the gradient itself,
so any error in its scale shows; and SGD under ``mixed_bfloat16``, whole and with 4 micro-batches (TensorFlow: MirroredStrategy over two logical CPU devices; JAX: a
DataParallel mesh over two host devices). Also reported: the metrics of each run, and the
dropout seed states of a run with dropout: one draw per micro-batch means fresh masks for each.
"""

from __future__ import annotations

import json
import os

import numpy as np

# Masked positions per example: halves 8 vs 16, even/odd examples 8 vs 16, examples m::4 of
# 6, 10, 2 and 6; replica halves split in two again: 2 vs 6 and 10 vs 6.
COUNTS = [1, 5, 1, 1, 5, 5, 1, 5]
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def _devices():
    if BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    else:
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ["JAX_PLATFORMS"] = "cpu"


def _scope(replicas: int):
    import contextlib

    import keras

    if BACKEND == "tensorflow":
        import tensorflow as tf

        if replicas == 1:
            return tf.distribute.get_strategy().scope()
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
    import jax

    if replicas == 1:
        keras.distribution.set_distribution(None)
    else:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices("cpu")))
    return contextlib.nullcontext()


def _optimizer(name: str, model):
    import keras

    from trainer.config import TrainConfig
    from trainer.optimization import create_optimizer

    if name == "adamw":  # the trainer's: clipping and Adam's normalisation hide a scale error
        config = TrainConfig(optimizer="adamw", learning_rate=1e-3, warmup_steps=0, train_steps=100)
        return create_optimizer(config, model)
    if name == "sgd":  # the update is the gradient: a wrong scale shows in full
        return keras.optimizers.SGD(learning_rate=0.5)
    if name == "sgd_loss_scale":  # as under mixed_float16: scaled loss, unscaled gradient
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=0.5))
    raise ValueError(name)


def train(
    initial: dict, *, steps: int, replicas: int, config, optimizer: str = "adamw", policy: str = "float32"
) -> dict:
    import keras

    from tests.trainer.batches import uneven_batch
    from trainer.bert_model import BertPretrainingModel

    features, labels = uneven_batch(counts=COUNTS)
    keras.utils.set_random_seed(1)
    keras.mixed_precision.set_global_policy(policy)
    with _scope(replicas):
        model = BertPretrainingModel(config)
        model.set_named_weights(initial)
        model.gradient_accumulation_steps = steps
        # jit_compile on TensorFlow, except over logical CPU devices (XLA refuses their variables).
        model.compile(optimizer=_optimizer(optimizer, model), jit_compile=replicas == 1)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensors((features, labels)).repeat()
        history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    else:
        repeated = {k: np.concatenate([v, v]) for k, v in features.items()}
        repeated_labels = {k: np.concatenate([v, v]) for k, v in labels.items()}
        history = model.fit(repeated, repeated_labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    keras.mixed_precision.set_global_policy("float32")
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    seeds = [
        np.asarray(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables if "seed" in v.path
    ]
    return {"weights": model.get_named_weights(), "logs": logs, "seed_states": seeds}


def main() -> None:
    _devices()
    import dataclasses

    import keras

    from tests.trainer.batches import CONFIG
    from trainer.bert_model import BertPretrainingModel

    keras.utils.set_random_seed(0)
    initial = BertPretrainingModel(CONFIG).get_named_weights()
    result = {"backend": BACKEND}
    reference = train(initial, steps=1, replicas=1, config=CONFIG)
    result["max_update"] = max(float(np.max(np.abs(reference["weights"][k] - initial[k]))) for k in initial)
    result["reference_logs"] = reference["logs"]
    result["runs"] = {}
    for name, steps, replicas in (("k2", 2, 1), ("k4", 4, 1), ("k2_replicas2", 2, 2)):
        run = train(initial, steps=steps, replicas=replicas, config=CONFIG)
        result["runs"][name] = {
            "max_diff": max(
                float(np.max(np.abs(run["weights"][k] - reference["weights"][k]))) for k in initial
            ),
            "logs": run["logs"],
        }
    # Plain SGD (and SGD behind a loss-scale optimizer): the update is the mean gradient itself.
    for optimizer in ("sgd", "sgd_loss_scale"):
        whole, micro = (
            train(initial, steps=k, replicas=1, config=CONFIG, optimizer=optimizer) for k in (1, 4)
        )
        result[optimizer] = {
            "max_update": max(float(np.max(np.abs(whole["weights"][k] - initial[k]))) for k in initial),
            "max_diff": max(
                float(np.max(np.abs(micro["weights"][k] - whole["weights"][k]))) for k in initial
            ),
        }
    # bfloat16 compute: 4 micro-batches against the whole batch, both in bf16, next to the
    # rounding of bf16 itself (the whole batch in bf16 against float32).
    f32, bf16, bf16_k4 = (
        train(initial, steps=k, replicas=1, config=CONFIG, optimizer="sgd", policy=p)
        for k, p in ((1, "float32"), (1, "mixed_bfloat16"), (4, "mixed_bfloat16"))
    )
    result["bf16"] = {
        "max_update": max(float(np.max(np.abs(f32["weights"][k] - initial[k]))) for k in initial),
        "bf16_vs_float32": max(
            float(np.max(np.abs(bf16["weights"][k] - f32["weights"][k]))) for k in initial
        ),
        "k4_vs_k1": max(float(np.max(np.abs(bf16_k4["weights"][k] - bf16["weights"][k]))) for k in initial),
    }
    # With dropout: the dropout seed states advance once per micro-batch (fresh masks for
    # each), as twice as many whole-batch steps would advance them.
    dropout = dataclasses.replace(CONFIG, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    k1, k2 = (train(initial, steps=steps, replicas=1, config=dropout) for steps in (1, 2))
    result["dropout"] = {
        "k2_vs_k1": max(float(np.max(np.abs(k2["weights"][k] - k1["weights"][k]))) for k in initial),
        "seed_states_k1": [s.tolist() for s in k1["seed_states"]],
        "seed_states_k2": [s.tolist() for s in k2["seed_states"]],
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
