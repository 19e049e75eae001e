"""``trainer.callbacks``: the training loop's callback list leaves the step logs on the device."""

from __future__ import annotations

import keras
import numpy as np

from tests.trainer.batches import CONFIG, uneven_batch
from trainer.bert_model import BertPretrainingModel
from trainer.callbacks import TrainingLoop, fit_callbacks
from trainer.config import TrainConfig
from trainer.optimization import create_optimizer, make_schedule


class _Recorder(keras.callbacks.Callback):
    """Runs after the loop: the logs it got, and how many executions the loop left in flight."""

    def __init__(self, loop: TrainingLoop):
        super().__init__()
        self.loop = loop
        self.losses = []
        self.in_flight = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])
        self.in_flight.append(len(self.loop._in_flight))


def _fit(callbacks_for) -> tuple[TrainingLoop, _Recorder]:
    keras.utils.set_random_seed(0)
    model = BertPretrainingModel(CONFIG)
    config = TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=6)
    model.compile(optimizer=create_optimizer(config, model))
    loop = TrainingLoop(
        initial_step=0,
        global_batch_size=8,
        log_every=3,
        eval_every=0,
        checkpoint_every=6,
        schedule=make_schedule(config),
    )
    loop.MAX_EXECUTIONS_AHEAD = 1
    recorder = _Recorder(loop)
    features, labels = uneven_batch()
    repeated = [{k: np.concatenate([v] * 6) for k, v in part.items()} for part in (features, labels)]
    model.fit(
        *repeated,
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=callbacks_for(loop, recorder, model),
    )
    return loop, recorder


def test_step_logs_reach_the_callbacks_unconverted_and_the_loop_reads_them_at_its_boundaries():
    def deferred(loop, recorder, model):
        return fit_callbacks(loop, model=model, steps=6, extra=[recorder])

    loop, recorder = _fit(deferred)
    # No step's logs were turned into Python floats on the way (that would wait for the step).
    assert len(recorder.losses) == 6
    assert not any(isinstance(v, float) for v in recorder.losses)
    # Between progress lines (every 3 steps) the loop waits only for the execution one back.
    assert recorder.in_flight == [1, 1, 0, 1, 1, 0]
    # The loop read the last progress window (steps 4-6) itself, as floats.
    assert isinstance(loop.last_train_metrics["loss"], float)
    assert loop.last_train_metrics["loss"] == float(np.asarray(recorder.losses[-1]))

    # Keras's own list hands every step's logs over as Python floats; the same training.
    default_loop, default_recorder = _fit(lambda loop, recorder, model: [loop, recorder])
    assert all(isinstance(v, float) for v in default_recorder.losses)
    assert default_loop.last_train_metrics == loop.last_train_metrics


def _progress_lines(loop, clock, caplog, *, steps: int) -> list[str]:
    """``steps`` training steps of ``loop`` (on a tiny model), each advancing the patched
    ``clock`` by 1 s; the progress lines it logged."""
    loop.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    caplog.set_level("INFO", logger="trainer")
    loop.on_train_begin()
    for batch in range(steps):
        clock[0] += 1.0
        loop.on_train_batch_end(batch, {"loss": np.float32(2.0)})
    return [r.getMessage() for r in caplog.records if "examples/s" in r.getMessage()]


def test_examples_per_second_counts_training_time_only(monkeypatch, caplog):
    # A clock the test moves: each step takes 1 s; the first progress line's learning-rate read
    # (a compile on JAX), evaluation and checkpoints take 10, 100 and 1000 s, none of it training.
    clock = [0.0]
    monkeypatch.setattr("trainer.callbacks.time.perf_counter", lambda: clock[0])
    config = TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=6)
    schedule = make_schedule(config)

    def slow_schedule(step):
        clock[0] += 10.0
        return schedule(step)

    def evaluate():
        clock[0] += 100.0
        return {"loss": 1.0}

    def save_checkpoint(step, metrics):
        clock[0] += 1000.0

    loop = TrainingLoop(
        initial_step=0,
        global_batch_size=8,
        log_every=2,
        eval_every=4,
        checkpoint_every=3,
        schedule=slow_schedule,
        evaluate=evaluate,
        save_checkpoint=save_checkpoint,
    )
    lines = _progress_lines(loop, clock, caplog, steps=6)
    rates = [float(line.rsplit("examples/s ", 1)[1]) for line in lines]
    # Windows: steps 1-2, step 4 (the checkpoint after step 3 restarts the window), steps 5-6.
    assert rates == [8.0, 8.0, 8.0]
    assert "TFLOP/s" not in lines[0] and "MFU" not in lines[0]  # no FLOPs given, none shown


def test_progress_lines_show_the_models_flops_rate_and_utilisation(monkeypatch, caplog):
    # 8 examples a step, 1 s a step, 3e11 FLOPs an example: 2.4 TFLOP/s; of a 4e12 peak, 60%.
    clock = [0.0]
    monkeypatch.setattr("trainer.callbacks.time.perf_counter", lambda: clock[0])
    loop = TrainingLoop(
        initial_step=0, global_batch_size=8, log_every=2, eval_every=0, checkpoint_every=100,
        schedule=make_schedule(TrainConfig(learning_rate=1e-3, warmup_steps=0, train_steps=4)),
        flops_per_example=3e11, peak_flops=4e12,
    )  # fmt: skip
    line = _progress_lines(loop, clock, caplog, steps=2)[0]
    assert line.endswith("examples/s 8.0 | TFLOP/s 2.4 | MFU 60%"), line
