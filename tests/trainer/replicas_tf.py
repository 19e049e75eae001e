"""Run as a script: one train step on 1 replica vs 2 replicas (MirroredStrategy over two
logical CPU devices) from the same weights and global batch; prints the differences as JSON.

A separate process because logical devices must be configured before TensorFlow starts.
"""

from __future__ import annotations

import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.trainer.batches import CONFIG, uneven_batch  # noqa: E402
from trainer.bert_model import BertPretrainingModel  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.optimization import create_optimizer  # noqa: E402


def train(
    strategy, initial: dict, optimizer: str, steps: int, steps_per_execution: int = 1
) -> tuple[dict, float]:
    features, labels = uneven_batch()
    with strategy.scope():
        model = BertPretrainingModel(CONFIG)
        model.set_named_weights(initial)
        if optimizer == "sgd":
            opt = keras.optimizers.SGD(1.0)
        else:
            config = TrainConfig(optimizer=optimizer, learning_rate=1e-3, warmup_steps=0, train_steps=100)
            opt = create_optimizer(config, model)
        model.compile(optimizer=opt, jit_compile=False, steps_per_execution=steps_per_execution)
    ds = tf.data.Dataset.from_tensors((features, labels)).repeat()
    history = model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    weights = model.get_named_weights()
    if steps_per_execution == 1:
        return weights, float(history.history["loss"][-1])
    # Evaluation of 5 different batches (not a multiple of steps_per_execution).
    batches = [uneven_batch(seed=i) for i in range(5)]
    eval_ds = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        eval_ds = eval_ds.concatenate(tf.data.Dataset.from_tensors(batch))
    evaluation = model.evaluate(eval_ds, verbose=0, return_dict=True)
    # One batch at a time, from Python (Keras's train_on_batch / test_on_batch).
    on_batch = model.test_on_batch(*batches[4], return_dict=True)
    on_batch["train_loss"] = float(model.train_on_batch(*batches[3], return_dict=True)["loss"])
    return weights, float(history.history["loss"][-1]), evaluation, on_batch


def main() -> None:
    keras.utils.set_random_seed(0)
    initial = BertPretrainingModel(CONFIG).get_named_weights()
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": mirrored.num_replicas_in_sync}
    for optimizer, steps in (("sgd", 1), ("adamw", 2), ("lamb", 2)):
        one, loss_one = train(tf.distribute.get_strategy(), initial, optimizer, steps)
        two, loss_two = train(mirrored, initial, optimizer, steps)
        result[optimizer] = {
            "max_update": max(float(np.max(np.abs(one[k] - initial[k]))) for k in one),
            "max_diff": max(float(np.max(np.abs(one[k] - two[k]))) for k in one),
            "loss_one": loss_one,
            "loss_two": loss_two,
        }
    # steps_per_execution 2 (Keras' own loop fails under MirroredStrategy; the model's runs).
    one, loss_one, eval_one, on_batch_one = train(tf.distribute.get_strategy(), initial, "adamw", 4, 2)
    two, loss_two, eval_two, on_batch_two = train(mirrored, initial, "adamw", 4, 2)
    reference, _ = train(tf.distribute.get_strategy(), initial, "adamw", 4)
    result["adamw_spe2"] = {
        "max_update": max(float(np.max(np.abs(one[k] - initial[k]))) for k in one),
        "max_diff": max(float(np.max(np.abs(one[k] - two[k]))) for k in one),
        "max_diff_spe1": max(float(np.max(np.abs(reference[k] - two[k]))) for k in one),
        "loss_one": loss_one,
        "loss_two": loss_two,
        "eval_one": eval_one,
        "eval_two": eval_two,
        "on_batch_one": on_batch_one,
        "on_batch_two": on_batch_two,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
