"""Run as a script with KERAS_BACKEND=jax and two host devices: builds the model from saved
weights, writes its outputs, trains one step on 1 device and on a 2-device DataParallel mesh
(without dropout, and with ``--dropout_rng hash`` dropout), and reports the differences (JSON on the last line). TensorFlow is made unimportable first,
as on the GPU machine that has JAX but no TensorFlow.

Usage: python -m tests.trainer.jax_backend WEIGHTS.npz INPUTS.npz OUT.npz
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np


def main(weights_path: str, inputs_path: str, out_path: str) -> None:
    sys.modules["tensorflow"] = None  # any "import tensorflow" now raises ImportError
    import jax
    import keras

    from tests.trainer.batches import CONFIG, uneven_batch
    from trainer.bert_model import BertPretrainingModel
    from trainer.config import BertConfig, KernelOptions, TrainConfig
    from trainer.optimization import create_optimizer

    assert keras.backend.backend() == "jax"
    saved = np.load(weights_path, allow_pickle=False)
    config = BertConfig.from_dict(json.loads(str(saved["__config__"])))
    weights = {k: saved[k] for k in saved.files if k != "__config__"}
    inputs = dict(np.load(inputs_path))
    model = BertPretrainingModel(config)
    model.set_named_weights(weights)
    outputs = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}

    def train(initial: dict, dropout_rng: str | None = None) -> tuple[dict, float]:
        features, labels = uneven_batch()
        if dropout_rng is None:
            m = BertPretrainingModel(CONFIG)
        else:  # the same dropout seeds in every model built here
            keras.utils.set_random_seed(11)
            dropout = dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
            m = BertPretrainingModel(
                dataclasses.replace(CONFIG, **dropout), KernelOptions(dropout_rng=dropout_rng)
            )
        m.set_named_weights(initial)
        m.compile(
            optimizer=create_optimizer(TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=100), m)
        )
        history = m.fit(features, labels, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return m.get_named_weights(), float(history.history["loss"][-1])

    initial = BertPretrainingModel(CONFIG).get_named_weights()
    one, loss_one = train(initial)
    hash_one, hash_loss_one = train(initial, "hash")
    devices = jax.devices("cpu")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    two, loss_two = train(initial)
    hash_two, hash_loss_two = train(initial, "hash")
    np.savez(out_path, **outputs)
    report = {
        "devices": len(devices),
        "max_update": max(float(np.max(np.abs(one[k] - initial[k]))) for k in one),
        "max_diff": max(float(np.max(np.abs(one[k] - two[k]))) for k in one),
        "loss_one": loss_one,
        "loss_two": loss_two,
        # With dropout from hash_dropout: each device computes its own rows' masks.
        "hash_max_diff": max(float(np.max(np.abs(hash_one[k] - hash_two[k]))) for k in one),
        "hash_vs_no_dropout": max(float(np.max(np.abs(hash_one[k] - one[k]))) for k in one),
        "hash_loss_one": hash_loss_one,
        "hash_loss_two": hash_loss_two,
        "tensorflow_importable": _importable("tensorflow"),
    }
    print("RESULT " + json.dumps(report))


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main(*sys.argv[1:4])
