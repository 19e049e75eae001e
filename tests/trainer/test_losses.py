"""``trainer.losses``: the MLM cross-entropy and hits against a float64 reference."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer import losses


def _reference(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    log_sum = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    return log_sum - np.take_along_axis(z, ids[..., None], axis=-1)[..., 0]


def _batch(seed: int = 0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(0, 4, size=(3, 5, 997)) + offset).astype(np.float32)
    ids = rng.integers(0, 997, size=(3, 5)).astype(np.int32)
    weights = (rng.random((3, 5)) < 0.7).astype(np.float32)
    return ids, logits, weights


def test_mlm_loss_and_gradient_are_the_float64_cross_entropy():
    for offset in (0.0, 3e4):  # large logits must not overflow the exponentials
        ids, logits, weights = _batch(offset=offset)
        v = tf.Variable(logits)
        with tf.GradientTape() as tape:
            out = losses.pretraining_losses(
                labels={"masked_lm_ids": ids, "masked_lm_weights": weights},
                outputs={"mlm_logits": v},
                use_nsp=False,
            )
        grad = tape.gradient(out["loss"], v).numpy()
        ref = _reference(ids, logits)
        # float32 rounding: 2e-5 near 0, two float32 spacings of the logits near 3e4
        atol = max(2e-5, 2 * float(np.spacing(np.float32(offset))))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out["mlm_losses"]), ref, atol=atol)
        denominator = weights.sum() + 1e-5
        np.testing.assert_allclose(
            float(out["loss"]), (ref * weights).sum() / denominator, rtol=1e-5, atol=atol
        )
        # d loss / d logits = (softmax - one_hot(id)) * weight / denominator
        z = logits.astype(np.float64)
        softmax = np.exp(z - z.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        expected = (softmax - np.eye(997)[ids]) * (weights / denominator)[..., None]
        np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_mlm_hits_are_the_argmax_and_a_tie_for_the_maximum_counts():
    ids, logits, weights = _batch(seed=1)
    ids[0, 0] = int(np.argmax(logits[0, 0]))  # one sure hit
    logits[1, 1, 7] = logits[1, 1, 900] = logits[1, 1].max() + 1  # a tie at the top
    ids[1, 1] = 900
    out = losses.pretraining_losses(
        labels={"masked_lm_ids": ids, "masked_lm_weights": weights},
        outputs={"mlm_logits": logits},
        use_nsp=False,
    )
    hits = keras.ops.convert_to_numpy(out["mlm_correct"])
    expected = (np.argmax(logits, axis=-1) == ids).astype(np.float32)
    expected[1, 1] = 1.0  # argmax takes index 7; the label's logit is as large
    np.testing.assert_array_equal(hits, expected)
    assert hits[0, 0] == 1.0 and hits.sum() >= 2
