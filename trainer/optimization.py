"""Learning-rate schedule and optimizers (AdamW or LAMB) for BERT pretraining.

As in google-research/bert: linear warmup from 0 to the peak, then linear decay to the end
rate at ``train_steps``; decoupled weight decay that skips LayerNorm parameters and biases;
global-norm gradient clipping. LAMB as in You et al. 2019 (``LayerwiseLamb``): the weight decay
inside the layer-wise trust ratio, and no trust ratio for LayerNorm parameters and biases.
"""

from __future__ import annotations

import re

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


@keras.saving.register_keras_serializable(package="trainer")
class LayerwiseLamb(keras.optimizers.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), per variable ``w``::

        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g**2
        r = (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + epsilon) + weight_decay * w
        ratio = ||w|| / ||r|| if both norms are > 0 else 1
        w -= lr * ratio * r

    The weight decay is part of ``r``, so it goes through the trust ratio (Keras' ``Lamb``
    instead decays ``w`` by ``lr * weight_decay * w`` beside the update and has no way to skip
    the ratio). Variables passed to ``exclude_from_weight_decay`` get no decay term, and those
    passed to ``exclude_from_layer_adaptation`` get ``ratio = 1`` (an Adam step); the BERT recipe
    excludes LayerNorm parameters and biases from both.

    Slots: one ``momentum`` and one ``velocity`` per variable, in ``variables`` (in the order of
    Keras' ``Lamb``), float32 like the variables under ``mixed_bfloat16``. Only ``keras.ops``:
    runs on TensorFlow (``tf.distribute``) and JAX (``stateless_apply``).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=None,
        name="lamb",
        **kwargs,
    ):
        # ``weight_decay`` is kept by the base class (config, ``exclude_from_weight_decay``), but
        # its decoupled decay is switched off in ``_apply_weight_decay``: it is applied here.
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._exclude_from_layer_adaptation = set()
        self._exclude_from_layer_adaptation_pattern = None

    def exclude_from_layer_adaptation(self, var_list=None, var_names=None):
        """Variables updated without the trust ratio (``ratio = 1``); call before ``build``.

        Args:
            var_list: the variables to exclude.
            var_names: substrings (regular expressions) of the names of variables to exclude.
        """
        if self.built:
            raise ValueError("exclude_from_layer_adaptation() must be called before the optimizer is built")
        self._exclude_from_layer_adaptation = {self._var_key(v) for v in var_list or ()}
        self._exclude_from_layer_adaptation_pattern = (
            re.compile("|".join(sorted(set(var_names)))) if var_names else None
        )

    def _use_layer_adaptation(self, variable) -> bool:
        if self._var_key(variable) in self._exclude_from_layer_adaptation:
            return False
        pattern = self._exclude_from_layer_adaptation_pattern
        return pattern is None or pattern.search(variable.name) is None

    def _apply_weight_decay(self, variables):
        """No decoupled decay: the decay term is inside ``update_step``."""

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = ops.cast(_dense([gradient])[0], dtype)
        lr = ops.cast(learning_rate, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]

        self.assign(m, beta_1 * m + (1.0 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1.0 - beta_2) * ops.square(gradient))
        m_hat = m / (1.0 - ops.power(beta_1, step))
        v_hat = v / (1.0 - ops.power(beta_2, step))
        update = m_hat / (ops.sqrt(v_hat) + ops.cast(self.epsilon, dtype))
        if self.weight_decay and self._use_weight_decay(variable):
            update = update + ops.cast(self.weight_decay, dtype) * variable
        if self._use_layer_adaptation(variable):
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            r_norm = ops.sqrt(ops.sum(ops.square(update)))
            both = ops.logical_and(w_norm > 0, r_norm > 0)
            ratio = ops.where(both, w_norm / ops.where(both, r_norm, 1.0), 1.0)
            update = ratio * update
        self.assign_sub(variable, lr * update)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


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
Lamb = keras.saving.register_keras_serializable(package="trainer", name="Lamb")(
    _clip_after_replica_sum(LayerwiseLamb)
)


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
        # Weight decay inside the trust ratio; LayerNorm and biases without the trust ratio.
        optimizer = Lamb(**common, name="lamb")
        optimizer.exclude_from_layer_adaptation(var_list=no_decay_variables(model))
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
