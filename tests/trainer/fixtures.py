"""Test helper: a small TFRecord set in the layout of docs/data_format.md.

Documents follow a simple pattern (each token is the previous plus one, modulo the
vocabulary), so a tiny model can learn to fill masks and its loss falls within a few steps.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf


def _example(rng, *, seq_len: int, num_pred: int, vocab_size: int, nsp: bool) -> tf.train.Example:
    length = int(rng.integers(seq_len // 2, seq_len + 1))
    start = int(rng.integers(5, vocab_size))
    tokens = [2] + [5 + (start + i) % (vocab_size - 5) for i in range(length - 2)] + [3]
    split = length // 2
    segment = [0] * split + [1] * (length - split)
    candidates = np.arange(1, length - 1)
    num = min(num_pred, max(1, round(length * 0.15)))
    positions = np.sort(rng.choice(candidates, size=num, replace=False))
    ids = [tokens[p] for p in positions]
    input_ids = list(tokens)
    for p in positions:
        input_ids[p] = 4  # [MASK]
    pad = seq_len - length
    pred_pad = num_pred - num

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {
        "input_ids": ints(input_ids + [0] * pad),
        "input_mask": ints([1] * length + [0] * pad),
        "segment_ids": ints(segment + [0] * pad),
        "masked_lm_positions": ints(list(positions) + [0] * pred_pad),
        "masked_lm_ids": ints(ids + [0] * pred_pad),
        "masked_lm_weights": tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0] * num + [0.0] * pred_pad)
        ),
        "next_sentence_labels": ints([int(rng.integers(0, 2)) if nsp else 0]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_pretraining_data(
    out_dir: str,
    *,
    seq_len: int = 32,
    num_pred: int = 5,
    vocab_size: int = 60,
    num_train: int = 256,
    num_eval: int = 64,
    num_files: int = 2,
    nsp: bool = True,
    gzip: bool = False,
    seed: int = 0,
    metadata_overrides: dict | None = None,
) -> str:
    """Writes ``train-*``/``validation-*`` TFRecords and ``metadata.json`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".tfrecord.gz" if gzip else ".tfrecord"
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    splits = {}
    for split, count in (("train", num_train), ("validation", num_eval)):
        for shard in range(num_files):
            path = os.path.join(out_dir, f"{split}-{shard:05d}-of-{num_files:05d}{ext}")
            with tf.io.TFRecordWriter(path, options) as writer:
                for _ in range(count // num_files):
                    ex = _example(rng, seq_len=seq_len, num_pred=num_pred, vocab_size=vocab_size, nsp=nsp)
                    writer.write(ex.SerializeToString())
        splits[split] = {
            "file_pattern": f"{split}-*-of-{num_files:05d}{ext}",
            "num_files": num_files,
            "num_examples": count // num_files * num_files,
        }
    metadata = {
        "format": "bert-pretraining-tfrecord",
        "format_version": 1,
        "max_seq_length": seq_len,
        "max_predictions_per_seq": num_pred,
        "vocab_size": vocab_size,
        "vocab_file": "vocab/vocab.txt",
        "tokenizer_file": "vocab/tokenizer.json",
        "special_token_ids": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4},
        "nsp": nsp,
        "compression": "GZIP" if gzip else None,
        "masking": {"masked_lm_prob": 0.15},
        "seed": seed,
        "splits": splits,
        "input_counts": {"documents_read": 0, "documents_kept": 0, "documents_dropped": {}},
    }
    metadata.update(metadata_overrides or {})
    with open(os.path.join(out_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    return out_dir
