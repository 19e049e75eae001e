"""Random pretraining batches from NumPy: ``--synthetic_data`` on the JAX backend.

So the JAX backend trains without TensorFlow (a GPU machine with JAX alone); only reading
TFRecords needs ``tf.data``. The TensorFlow backend keeps ``input_pipeline``'s in-graph
version (a ``tf.data`` dataset, as ``TPUStrategy`` needs). These batches have the shapes, dtypes and value ranges of
``input_pipeline.make_synthetic_dataset`` (not its values): full-length sequences, ``[CLS]``
position never masked, P distinct sorted positions, random NSP labels.

Shape key: B batch, L max_seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from trainer.data_spec import DataSpec


def synthetic_batches(
    spec: DataSpec, *, batch_size: int, vocab_size: int, seed: int = 0, stream: int = 0
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """An endless iterator of ``(features, labels)`` as ``BertPretrainingModel.fit`` takes them.

    ``seed`` (any int) and ``stream`` pick the random sequence (training and evaluation use
    different streams).
    """
    seq, pred = spec.max_seq_length, spec.max_predictions_per_seq
    if pred >= seq:
        raise ValueError(f"max_predictions_per_seq {pred} must be < max_seq_length {seq}")
    rng = np.random.default_rng([seed % 2**32, stream])
    segment_ids = np.zeros((batch_size, seq), np.int32)
    segment_ids[:, seq // 2 :] = 1
    while True:
        ids = rng.integers(5, vocab_size, size=(batch_size, seq), dtype=np.int32)
        positions = np.sort(np.argsort(rng.random((batch_size, seq - 1)), axis=1)[:, :pred] + 1, axis=1)
        positions = positions.astype(np.int32)  # [B, P] in 1..L-1
        features = {
            "input_ids": ids,
            "input_mask": np.ones((batch_size, seq), np.int32),
            "segment_ids": segment_ids.copy(),
            "masked_lm_positions": positions,
        }
        labels = {
            "masked_lm_ids": np.take_along_axis(ids, positions, axis=1),
            "masked_lm_weights": np.ones((batch_size, pred), np.float32),
            "next_sentence_labels": rng.integers(0, 2, size=(batch_size,), dtype=np.int32),
        }
        yield features, labels
