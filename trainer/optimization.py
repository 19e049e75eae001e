"""Learning-rate schedule and optimizers (AdamW or LAMB) for BERT pretraining.

As in google-research/bert: linear warmup from 0 to the peak, then linear decay to the end
rate at ``train_steps``; decoupled weight decay that skips LayerNorm parameters and biases;
global-norm gradient clipping.
"""

from __future__ import annotations

import keras
from keras import ops

from trainer.config import TrainConfig


@keras.saving.register_keras_serializable(package="trainer")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(step) = peak * step / warmup`` for ``step < warmup``, then linear to ``end_lr`` at ``total``.

    ``step`` is the 0-based index of the update (the optimizer's ``iterations``).
    """

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0):
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_lr = float(end_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        warm = self.peak_lr * step / warmup
        decay_span = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        remaining = ops.clip((self.total_steps - step) / decay_span, 0.0, 1.0)
        decayed = self.end_lr + (self.peak_lr - self.end_lr) * remaining
        if self.warmup_steps == 0:
            return decayed
        return ops.where(step < warmup, warm, decayed)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "end_lr": self.end_lr,
        }


def no_decay_variables(model) -> list:
    """LayerNorm parameters and biases: the variables without weight decay."""
    return [
        v
        for name, v in model.named_variables().items()
        if name.endswith(("/gamma", "/beta", "/bias", "/output_bias"))
    ]


def make_schedule(config: TrainConfig) -> WarmupLinearDecay:
    return WarmupLinearDecay(
        config.learning_rate, config.warmup_steps, config.train_steps, config.end_learning_rate
    )


def create_optimizer(config: TrainConfig, model) -> keras.optimizers.Optimizer:
    """The optimizer for ``config`` with the warmup/decay schedule, clipping and weight decay.

    Must run before the optimizer is built (before ``compile``/``fit``) and, under a
    ``tf.distribute`` strategy, inside its scope.
    """
    common = {
        "learning_rate": make_schedule(config),
        "beta_1": config.beta_1,
        "beta_2": config.beta_2,
        "epsilon": config.epsilon,
        "weight_decay": config.weight_decay,
        "global_clipnorm": config.clip_norm or None,
    }
    if config.optimizer == "adamw":
        # Keras AdamW applies decay decoupled from the Adam update: v -= lr * wd * v.
        optimizer = keras.optimizers.AdamW(**common, name="adamw")
    else:
        optimizer = keras.optimizers.Lamb(**common, name="lamb")
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
