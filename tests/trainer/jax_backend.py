"""Run as a script with KERAS_BACKEND=jax and two host devices: builds the model from saved
weights, writes its outputs, trains one step on 1 device and on a 2-device DataParallel mesh,
and reports the differences (JSON on the last line). TensorFlow is made unimportable first,
as on the GPU machine that has JAX but no TensorFlow.

Usage: python -m tests.trainer.jax_backend WEIGHTS.npz INPUTS.npz OUT.npz
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(weights_path: str, inputs_path: str, out_path: str) -> None:
    sys.modules["tensorflow"] = None  # any "import tensorflow" now raises ImportError
    import jax
    import keras

    from tests.trainer.batches import CONFIG, uneven_batch
    from trainer.bert_model import BertPretrainingModel
    from trainer.config import BertConfig, TrainConfig
    from trainer.optimization import create_optimizer

    assert keras.backend.backend() == "jax"
    saved = np.load(weights_path, allow_pickle=False)
    config = BertConfig.from_dict(json.loads(str(saved["__config__"])))
    weights = {k: saved[k] for k in saved.files if k != "__config__"}
    inputs = dict(np.load(inputs_path))
    model = BertPretrainingModel(config)
    model.set_named_weights(weights)
    outputs = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}

    def train(initial: dict) -> tuple[dict, float]:
        features, labels = uneven_batch()
        m = BertPretrainingModel(CONFIG)
        m.set_named_weights(initial)
        m.compile(
            optimizer=create_optimizer(TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=100), m)
        )
        history = m.fit(features, labels, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return m.get_named_weights(), float(history.history["loss"][-1])

    initial = BertPretrainingModel(CONFIG).get_named_weights()
    one, loss_one = train(initial)
    devices = jax.devices("cpu")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    two, loss_two = train(initial)
    np.savez(out_path, **outputs)
    report = {
        "devices": len(devices),
        "max_update": max(float(np.max(np.abs(one[k] - initial[k]))) for k in one),
        "max_diff": max(float(np.max(np.abs(one[k] - two[k]))) for k in one),
        "loss_one": loss_one,
        "loss_two": loss_two,
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
