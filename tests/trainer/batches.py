"""Test helper (numpy only, no TensorFlow): a fixed pretraining batch and a small config."""

from __future__ import annotations

import numpy as np

from trainer.config import BertConfig

CONFIG = BertConfig.from_preset(
    "tiny",
    vocab_size=50,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def uneven_batch(
    *, batch: int = 8, seq_len: int = 16, num_pred: int = 5, seed: int = 0, counts=None
) -> tuple[dict, dict]:
    """``(features, labels)``: the first half of the batch has 1 masked position per example,
    the second half ``num_pred``, so a per-replica mean differs from the global mean.
    ``counts`` (one per example) sets the masked positions of each example instead."""
    if counts is None:
        counts = [1 if b < batch // 2 else num_pred for b in range(batch)]
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, CONFIG.vocab_size, size=(batch, seq_len)).astype(np.int32)
    mask = np.ones((batch, seq_len), np.int32)
    mask[:, seq_len - 3 :] = 0
    positions = np.zeros((batch, num_pred), np.int32)
    weights = np.zeros((batch, num_pred), np.float32)
    for b in range(batch):
        n = counts[b]
        positions[b, :n] = np.sort(rng.choice(np.arange(1, seq_len - 3), size=n, replace=False))
        weights[b, :n] = 1.0
    features = {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": (np.arange(seq_len)[None, :] >= seq_len // 2).astype(np.int32).repeat(batch, 0),
        "masked_lm_positions": positions,
    }
    labels = {
        "masked_lm_ids": np.take_along_axis(ids, positions, axis=1) * (weights > 0),
        "masked_lm_weights": weights,
        "next_sentence_labels": (np.arange(batch) % 2).astype(np.int32),
    }
    return features, labels
