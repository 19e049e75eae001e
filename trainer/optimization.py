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


def _tf_replicas_in_sync() -> int:
    """Replicas of the enclosing ``tf.distribute`` replica context (1 elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    return tf.distribute.get_replica_context().num_replicas_in_sync


def _dense(grads: list) -> list:
    """Embedding gradients as dense tensors (TensorFlow ``IndexedSlices`` repeat a row once per
    occurrence of a token, and the norm of those slices is not the norm of the gradient)."""
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf

    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def _clip_after_replica_sum(base: type) -> type:
    """``base`` with global-norm clipping of the true gradient on TensorFlow.

    Keras 3.15's TensorFlow optimizer (1) clips each replica's partial gradient by its own norm
    and sums afterwards, so a job on 8 TPU cores would clip differently from one on 1, and
    (2) takes the norm of embedding ``IndexedSlices`` with repeated rows. Here the replicas'
    gradients are summed first, made dense, then clipped by their global norm.
    """

    class ClipAfterSum(base):
        def _clip_gradients(self, grads):
            if not self.global_clipnorm:
                return super()._clip_gradients(grads)
            if _tf_replicas_in_sync() > 1:
                return grads  # clipped in _backend_update_step, after the sum
            return super()._clip_gradients(_dense(grads))

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            if not self.global_clipnorm or _tf_replicas_in_sync() == 1:
                return super()._backend_update_step(grads, trainable_variables, learning_rate)
            import tensorflow as tf

            # As Keras's TensorFlow _backend_update_step, with the clip between sum and update.
            variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
            summed = self._all_reduce_sum_gradients(list(zip(grads, variables, strict=True)))
            clipped, _ = tf.clip_by_global_norm(_dense([g for g, _ in summed]), self.global_clipnorm)
            tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_tf_update_step,
                self._distribution_strategy,
                list(zip(clipped, variables, strict=True)),
                learning_rate,
            )

    ClipAfterSum.__name__ = base.__name__
    return ClipAfterSum


AdamW = _clip_after_replica_sum(keras.optimizers.AdamW)
Lamb = _clip_after_replica_sum(keras.optimizers.Lamb)


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
        optimizer = AdamW(**common, name="adamw")
    else:
        optimizer = Lamb(**common, name="lamb")
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
