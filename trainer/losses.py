"""Pretraining losses (masked LM + next sentence), normalized over the global batch.

Under ``tf.distribute`` each replica computes its share of the global mean: its local sum
divided by the global denominator (all-reduced), and Keras sums the replicas' gradients.
Under JAX with ``keras.distribution`` the arrays are global already. Either way the loss and
its gradient are those of one replica seeing the whole global batch.

With gradient accumulation (``trainer.accumulation``) a replica's batch is split into K
micro-batches. Each micro-batch's MLM loss is then divided by the whole batch's denominator
over K (``micro_batch_denominator``), so the mean of the K micro-batch losses, and of their
gradients, is the loss and gradient of the whole batch; the NSP term needs nothing, since every
micro-batch holds the same number of examples.

Shape key: B batch (per replica), P predictions per sequence, V vocabulary.
"""

from __future__ import annotations

import contextlib
import threading

import keras
from keras import ops

# Label of evaluation batches filled up with padding: 1 for an example, 0 for padding.
EXAMPLE_WEIGHTS = "example_weights"

# The MLM denominator of the micro-batch being traced, per thread (tf.distribute traces each
# replica's step in a thread of its own); innermost last, empty outside a micro-batch.
_MICRO_BATCH = threading.local()


def _micro_batch_denominators() -> list:
    if not hasattr(_MICRO_BATCH, "denominators"):
        _MICRO_BATCH.denominators = []
    return _MICRO_BATCH.denominators


def _replica_sum(value):
    """Sum of ``value`` over the replicas of a ``tf.distribute`` strategy; ``value`` elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf  # only on the TensorFlow backend

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return value
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def mlm_denominator(weights):
    """The MLM loss denominator of a batch: its masked positions over all replicas, plus 1e-5
    (which guards a batch without any prediction). Not differentiated."""
    return ops.stop_gradient(_replica_sum(ops.sum(ops.cast(weights, "float32")))) + 1e-5


@contextlib.contextmanager
def micro_batch_denominator(denominator):
    """While tracing one micro-batch: ``pretraining_losses`` divides the MLM loss by
    ``denominator`` (the whole batch's ``mlm_denominator`` over the number of micro-batches)."""
    stack = _micro_batch_denominators()
    stack.append(denominator)
    try:
        yield
    finally:
        stack.pop()


def num_replicas() -> int:
    """Replicas of the current ``tf.distribute`` strategy (1 on JAX: arrays are global there)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _cross_entropy_and_hits(ids, logits):
    """Cross-entropy of integer labels ``ids`` [...] under float32 ``logits`` [..., V], and
    whether each label's logit is the largest (1.0) or not (0.0).

    The loss is ``max + log(sum(exp(logits - max))) - logits[id]``, and a label is a hit when
    its logit equals the maximum (a tie for the maximum counts as a hit, where an argmax would
    take the first). The maximum serves both, so XLA reads the MLM head's [B, P, V] logits twice
    (maximum and label's logit in one pass, sum of exponentials in another) where a
    cross-entropy plus an argmax read them three times.

    ``ids`` must lie in [0, V), as the data contract guarantees (padding positions carry id 0
    and weight 0): an id outside selects no logit, so its loss would be the log-sum alone.
    """
    top = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))  # the shift only: exact gradient
    log_sum = ops.log(ops.sum(ops.exp(logits - top), axis=-1)) + top[..., 0]
    # A select, not a gather: its gradient is elementwise, where a gather's is a scatter.
    vocab = ops.arange(ops.shape(logits)[-1], dtype="int32")
    picked = ops.sum(ops.where(vocab == ids[..., None], logits, 0.0), axis=-1)
    hits = ops.cast(picked >= top[..., 0], "float32")
    return log_sum - picked, hits


def pretraining_losses(*, labels: dict, outputs: dict, use_nsp: bool) -> dict:
    """Computes this replica's share of the global-batch losses, plus per-example terms for metrics.

    Args:
        labels: ``masked_lm_ids`` int [B, P], ``masked_lm_weights`` float [B, P],
            ``next_sentence_labels`` int [B] or [B, 1]; optionally ``example_weights`` float
            [B] (evaluation batches filled up with padding of weight 0, whose
            ``masked_lm_weights`` are 0 too): NSP then averages over the weighted examples.
        outputs: the model's ``mlm_logits`` [B, P, V] and ``nsp_logits`` [B, 2].
        use_nsp: add the NSP loss (otherwise MLM only).

    Returns:
        dict with ``loss`` (scalar to differentiate), ``mlm_losses`` [B, P], ``mlm_weights``
        [B, P], ``mlm_correct`` [B, P], and with NSP ``nsp_losses`` [B], ``nsp_correct`` [B];
        ``example_weights`` [B] when the labels have them.
    """
    mlm_logits = ops.cast(outputs["mlm_logits"], "float32")
    ids = ops.cast(labels["masked_lm_ids"], "int32")
    weights = ops.cast(labels["masked_lm_weights"], "float32")
    mlm_losses, mlm_correct = _cross_entropy_and_hits(ids, mlm_logits)  # [B, P] each
    stack = _micro_batch_denominators()
    if stack:
        denominator = stack[-1]
    else:
        denominator = mlm_denominator(weights)
    loss = ops.sum(mlm_losses * weights) / denominator
    result = {
        "mlm_losses": mlm_losses,
        "mlm_weights": weights,
        "mlm_correct": mlm_correct,
    }
    example_weights = labels.get(EXAMPLE_WEIGHTS)  # evaluation batches: 0 marks padding
    if example_weights is not None:
        result[EXAMPLE_WEIGHTS] = ops.cast(example_weights, "float32")
    if use_nsp:
        nsp_logits = ops.cast(outputs["nsp_logits"], "float32")
        nsp_labels = ops.reshape(ops.cast(labels["next_sentence_labels"], "int32"), (-1,))  # [B]
        nsp_losses = keras.losses.sparse_categorical_crossentropy(nsp_labels, nsp_logits, from_logits=True)
        if example_weights is None:
            global_batch = ops.cast(ops.shape(nsp_losses)[0] * num_replicas(), "float32")
            loss = loss + ops.sum(nsp_losses) / global_batch
        else:
            w = result[EXAMPLE_WEIGHTS]
            loss = loss + ops.sum(nsp_losses * w) / (ops.stop_gradient(_replica_sum(ops.sum(w))) + 1e-5)
        result["nsp_losses"] = nsp_losses
        result["nsp_correct"] = ops.cast(
            ops.equal(ops.cast(ops.argmax(nsp_logits, axis=-1), "int32"), nsp_labels), "float32"
        )
    result["loss"] = loss
    return result
