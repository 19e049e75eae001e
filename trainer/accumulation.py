"""Gradient accumulation: one optimizer update from K micro-batches of the batch.

``--gradient_accumulation_steps K`` keeps every count of the trainer in optimizer updates:
``--batch_size`` is still the global batch of one update and one step of ``fit``, and the
input pipeline still delivers it whole. Inside the compiled step the batch (each replica's
share of it) is split into K micro-batches of ``batch / K`` examples, run one after the other
in a loop (``jax.lax.scan``, ``tf.while_loop``), so that only one micro-batch's activations
are alive at a time; their gradients are summed, and the optimizer (clipping, AdamW or LAMB,
the learning-rate schedule) sees their mean once.

That mean is the gradient of the whole batch, not only close to it: each micro-batch's MLM
loss is divided by the whole batch's masked-position count over K (``trainer.losses``), so
micro-batches with more masked positions weigh more, as in the whole batch. Metrics are summed
over the micro-batches. Dropout draws fresh masks for every micro-batch (the seed state is
carried through the loop).

Micro-batch ``m`` takes the examples ``m, m + K, m + 2K, ...`` of the batch: on JAX with a
data-parallel mesh the batch axis is split over devices in contiguous blocks, and this choice
gives every device an equal part of every micro-batch without moving data.

Cost on several devices: on TensorFlow each replica sums its micro-batches' gradients locally
and the replicas' sums are all-reduced once, in the optimizer, as without accumulation. On a
JAX mesh XLA takes most of the gradients' all-reduce out of the loop, but not all: compiled
for two H100s (BERT-base, batch 256; ``benchmarks.gpu_compile --devices 2 --runs
keras_jax,keras_jax_accum4``), a step all-reduces 0.33 GB whole and 0.78 GB in 4
micro-batches, of which the word-embedding table's gradient (the lookup's float32 part and the
tied decoder's bf16 part, 0.15 GB) in every micro-batch. Accumulation is meant for a batch
that does not fit the devices; where it does fit, run it whole.
"""

from __future__ import annotations

import keras

from trainer import losses


def _split(array, steps: int, numpy_like):
    """``[B, ...]`` -> ``[K, B / K, ...]``, micro-batch ``m`` holding examples ``m::K``."""
    shape = tuple(array.shape)
    interleaved = numpy_like.reshape(array, (shape[0] // steps, steps) + shape[1:])
    return numpy_like.moveaxis(interleaved, 1, 0)


def _unpack(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError("gradient accumulation takes (features, labels) batches without sample weights")
    return x, y


def train_step(model, steps: int, *args):
    """``model.train_step`` with ``steps`` micro-batches, for the current Keras backend.

    ``args`` are those of Keras's own ``train_step``: ``(state, data)`` on JAX, ``(data,)`` on
    TensorFlow; the result is what that ``train_step`` returns.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_train_step(model, steps, *args)
    if backend == "tensorflow":
        return _tf_train_step(model, steps, *args)
    raise ValueError(f"gradient accumulation is not supported on KERAS_BACKEND={backend!r}")


def _jax_train_step(model, steps: int, state, data):
    import jax
    import jax.numpy as jnp

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y = _unpack(data)
    denominator = losses.mlm_denominator(y["masked_lm_weights"]) / steps  # arrays are global here
    micro = jax.tree.map(lambda a: _split(jnp.asarray(a), steps, jnp), (x, y))
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)

    def one(carry, batch):
        grad_sum, non_trainable, metrics_vars, loss_sum = carry
        bx, by = batch
        with losses.micro_batch_denominator(denominator):
            (_, aux), grads = grad_fn(
                trainable,
                non_trainable,
                metrics_vars,
                bx,
                by,
                None,
                training=True,
                optimizer_variables=optimizer_vars,
            )
        unscaled_loss, _, non_trainable, metrics_vars = aux
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (grad_sum, non_trainable, metrics_vars, loss_sum + unscaled_loss), None

    start = (jax.tree.map(jnp.zeros_like, trainable), non_trainable, metrics_vars, jnp.zeros((), "float32"))
    (grad_sum, non_trainable, metrics_vars, loss_sum), _ = jax.lax.scan(one, start, micro)
    grads = jax.tree.map(lambda g: g / steps, grad_sum)
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    # Keras's own bookkeeping of the loss tracker and the logs, as in its JAX train_step.
    logs, metrics_vars = model._update_metrics_variables(metrics_vars, loss_sum / steps, x, y, None, None)
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _tf_train_step(model, steps: int, data):
    import tensorflow as tf

    x, y = _unpack(data)
    denominator = losses.mlm_denominator(y["masked_lm_weights"]) / steps  # this replica's share
    micro = tf.nest.map_structure(
        lambda a: _split(tf.convert_to_tensor(a), steps, tf.experimental.numpy), (x, y)
    )
    variables = model.trainable_weights

    def one(i, grad_sum, loss_sum):
        bx, by = tf.nest.map_structure(lambda a: tf.gather(a, i), micro)
        with tf.GradientTape() as tape:
            y_pred = model(bx, training=True)
            with losses.micro_batch_denominator(denominator):
                loss = model.compute_loss(x=bx, y=by, y_pred=y_pred, training=True)
            scaled = model.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        grad_sum = [s + tf.convert_to_tensor(g) for s, g in zip(grad_sum, grads, strict=True)]
        return i + 1, grad_sum, loss_sum + loss

    start = (tf.constant(0), [tf.zeros_like(v.value) for v in variables], tf.constant(0.0))
    # One micro-batch at a time: with parallel iterations the next forward pass would start
    # while the last backward pass still holds its activations.
    _, grad_sum, loss_sum = tf.while_loop(lambda i, *_: i < steps, one, start, parallel_iterations=1)
    loss = loss_sum / steps
    # As Keras's TensorFlow train_step: the tracker gets the loss of the global batch (this
    # replica's share times the replicas) weighted by this replica's examples.
    model._loss_tracker.update_state(
        loss * losses.num_replicas(), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
    )
    model.optimizer.apply_gradients(zip([g / steps for g in grad_sum], variables, strict=True))
    return model.compute_metrics(x, y, None, sample_weight=None)
