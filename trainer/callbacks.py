"""Keras callbacks of the training loop: progress, TensorBoard, NaN stop, evaluation, checkpoints.

``fit`` runs one "epoch" of all remaining steps; these callbacks act every N optimizer steps.
``step`` below is the global optimizer step after the batch (a resumed job starts from its
checkpoint's step). With ``steps_per_execution`` k the host sees the model every k steps, so
every period is a multiple of k (``TrainConfig`` checks this).
"""

from __future__ import annotations

import collections
import logging
import math
import time

import keras
import numpy as np

logger = logging.getLogger("trainer")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); the job stops."""


class StopRequested(RuntimeError):
    """A signal (SIGTERM: preemption, ``kill``) stopped the job after it saved a checkpoint."""


def _floats(logs: dict | None) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in (logs or {}).items()}


class DeferredLogsCallbackList(keras.callbacks.CallbackList):
    """``fit``'s callback list, handing each step's logs on as the step returned them.

    Keras's own list turns every step's logs into Python floats before any callback sees them
    (``pythonify_logs``), and reading a value waits for the step to finish on the device: the
    host then prepares and dispatches the next step only after the device went idle. Here the
    logs stay device values (JAX arrays, TensorFlow tensors), and ``TrainingLoop`` reads them
    only at its own boundaries (progress, evaluation, checkpoint, stop), so in between the host
    queues steps ahead of the device.
    """

    def on_train_batch_end(self, batch, logs=None):
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs)


def fit_callbacks(loop: TrainingLoop, *, model, steps: int, extra=()) -> DeferredLogsCallbackList:
    """The callback list for ``model.fit`` of ``steps`` steps driven by ``loop`` (then ``extra``)."""
    return DeferredLogsCallbackList(
        [loop, *extra], add_history=True, model=model, verbose=0, epochs=1, steps=steps
    )


class SummaryWriter:
    """TensorBoard scalars through ``tf.summary``; does nothing where TensorFlow is absent."""

    def __init__(self, logdir: str | None):
        self._writers = {}
        self._logdir = logdir
        try:
            import tensorflow as tf

            self._tf = tf
        except ImportError:  # the JAX GPU machine: no TensorBoard files
            self._tf = None
            if logdir:
                logger.warning("TensorFlow is not installed: no TensorBoard scalars in %s", logdir)

    def scalars(self, split: str, step: int, values: dict[str, float]) -> None:
        if self._tf is None or not self._logdir:
            return
        if split not in self._writers:
            self._writers[split] = self._tf.summary.create_file_writer(f"{self._logdir}/{split}")
        from tensorflow.core.framework import summary_pb2

        # What tensorboard's tf.summary.scalar writes, without needing the tensorboard package.
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        ).SerializeToString()
        with self._writers[split].as_default(step=step):
            for name, value in values.items():
                self._tf.summary.write(name, self._tf.constant(value, self._tf.float32), metadata=metadata)
        self._writers[split].flush()


class TrainingLoop(keras.callbacks.Callback):
    """Does, after each execution, whatever falls on that step, in a safe order.

    1. Every ``log_every`` steps: check the loss is finite, log a progress line and TensorBoard
       scalars, reset the metrics (so each line shows the last ``log_every`` steps).
    2. Every ``eval_every`` steps: evaluate on the validation data.
    3. Every ``checkpoint_every`` steps: check loss and weights are finite, save a checkpoint.
    4. After ``request_stop`` (a SIGTERM): save a checkpoint and end ``fit``.

    Between those steps it reads nothing, so that the host can queue executions ahead of the
    device (``DeferredLogsCallbackList``); it only waits for the execution
    ``MAX_EXECUTIONS_AHEAD`` back, which bounds how far ahead the host runs (and how many
    input batches wait on the device).

    Args:
        initial_step: the optimizer step at which this ``fit`` starts.
        global_batch_size: examples per step, over all replicas and hosts.
        log_every, eval_every, checkpoint_every: periods in steps (0 disables evaluation).
        schedule: the learning-rate schedule, for the progress line.
        evaluate: ``fn() -> dict`` of validation metrics, or None.
        save_checkpoint: ``fn(step, train_metrics)`` that writes a checkpoint, or None.
        summaries: the TensorBoard writer.
        flops_per_example: matrix-product FLOPs of one example's training step
            (``trainer.flops``): the progress line then shows the model's TFLOP/s.
        peak_flops: the peak FLOP/s of all devices together: the progress line then shows the
            model FLOPs utilisation (MFU).
    """

    MAX_EXECUTIONS_AHEAD = 8

    def __init__(
        self,
        *,
        initial_step: int,
        global_batch_size: int,
        log_every: int,
        eval_every: int,
        checkpoint_every: int,
        schedule,
        evaluate=None,
        save_checkpoint=None,
        summaries: SummaryWriter | None = None,
        flops_per_example: float | None = None,
        peak_flops: float | None = None,
    ):
        super().__init__()
        self.flops_per_example = flops_per_example
        self.peak_flops = peak_flops
        self.initial_step = initial_step
        self.global_batch_size = global_batch_size
        self.log_every = log_every
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.schedule = schedule
        self.evaluate = evaluate
        self.save_checkpoint = save_checkpoint
        self.summaries = summaries or SummaryWriter(None)
        self.last_train_metrics: dict[str, float] = {}
        self.last_eval_metrics: dict[str, float] = {}
        self.step = initial_step
        self.stop_signal: int | None = None
        self.stopped_at: int | None = None
        self._window_start = (time.perf_counter(), initial_step)
        self._in_flight: collections.deque = collections.deque()

    def request_stop(self, signum: int) -> None:
        """Asks the loop to save a checkpoint and stop at the next execution boundary."""
        self.stop_signal = signum

    def on_train_begin(self, logs=None):
        self._window_start = (time.perf_counter(), self.initial_step)

    def _check_finite(self, logs: dict[str, float]) -> None:
        loss = logs.get("loss", 0.0)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss} at step {self.step} (mean over the steps since the last progress line); "
                "training stops here and keeps the last good checkpoint. Lower --learning_rate, "
                "raise --warmup_steps or use --precision float32."
            )

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.initial_step + batch + 1
        step = self.step
        do_log = step % self.log_every == 0
        do_eval = bool(self.eval_every) and step % self.eval_every == 0 and self.evaluate is not None
        do_ckpt = step % self.checkpoint_every == 0 and self.save_checkpoint is not None
        do_stop = self.stop_signal is not None
        if not (do_log or do_eval or do_ckpt or do_stop):
            if logs and "loss" in logs:
                self._in_flight.append(logs["loss"])
                if len(self._in_flight) > self.MAX_EXECUTIONS_AHEAD:
                    np.asarray(self._in_flight.popleft())  # waits for that execution only
            return
        self._in_flight.clear()
        values = _floats(logs)
        self._check_finite(values)
        model = self.model  # on JAX, this writes the training state back into the variables
        if do_log:
            self._log_progress(step, values)
            model.reset_metrics()
        if do_eval:
            self.last_eval_metrics = self.evaluate()
            log_eval(step, self.last_eval_metrics)
            self.summaries.scalars("eval", step, self.last_eval_metrics)
            model.reset_metrics()
        if do_ckpt or (do_stop and self.save_checkpoint is not None):
            self.save_checkpoint(step, values)
        if do_stop:
            self.stopped_at = step
            model.stop_training = True
        # The next window starts here: examples/s counts training, not the progress line (whose
        # first learning-rate read compiles on JAX), evaluation or checkpoints (logged apart).
        self._window_start = (time.perf_counter(), step)

    def _log_progress(self, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        start_time, start_step = self._window_start
        examples_per_s = (step - start_step) * self.global_batch_size / max(now - start_time, 1e-9)
        lr = float(np.asarray(keras.ops.convert_to_numpy(self.schedule(step - 1))))
        parts = [f"step {step}"]
        for key in ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"):
            if key in values:
                parts.append(f"{key} {values[key]:.4f}")
        parts += [f"lr {lr:.3e}", f"examples/s {examples_per_s:.1f}"]
        rates = {"learning_rate": lr, "examples_per_second": examples_per_s}
        if self.flops_per_example:
            achieved = examples_per_s * self.flops_per_example
            parts.append(f"TFLOP/s {achieved / 1e12:.3g}")
            rates["model_tflops_per_second"] = achieved / 1e12
            if self.peak_flops:
                parts.append(f"MFU {100 * achieved / self.peak_flops:.3g}%")
                rates["mfu"] = achieved / self.peak_flops
        logger.info(" | ".join(parts))
        self.last_train_metrics = dict(values)
        self.summaries.scalars("train", step, {**values, **rates})


def log_eval(step: int, metrics: dict[str, float]) -> None:
    logger.info("eval at step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
