"""``tf.data`` input for pretraining: TFRecords (local or ``gs://``) to static-shape int32 batches.

Training: file-level shuffle, repeat, parallel interleave of the files, record shuffle,
``batch(drop_remainder=True)``, vectorized parsing, prefetch. Evaluation
(``make_eval_dataset``): the files in order, one pass, every example exactly once in batches
of the same static shape: the last batch is filled up with padding examples of weight 0
(label ``example_weights``), and a host whose shard ends sooner gets whole batches of them, so
that every host runs the same number of steps. Each element is ``(features, labels)`` as
``BertPretrainingModel.fit`` takes them.

The datasets run without tf.data's autotuning thread (``without_autotune_thread``): with it,
deleting an iterator (the end of every ``fit`` and ``evaluate``) could block for up to a minute.

Shape key: B batch, L max_seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.data_spec import DataSpec
from trainer.losses import EXAMPLE_WEIGHTS

# Records in the shuffle buffer: ~20 MB at seq 128, enough to mix neighbouring files.
SHUFFLE_BUFFER = 10_000
CYCLE_LENGTH = 8


def without_autotune_thread(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with ``autotune.enabled = False``: no autotuning thread behind its iterators.

    TensorFlow (2.21) has a lost wake-up in that thread: deleting the iterator cancels it and
    notifies it before the cancellation is marked done, so the thread can go back to sleep for
    the rest of its optimization period (which doubles up to 60 s) while the deleting thread,
    holding the GIL, waits for it to exit. Keras deletes the iterator as ``fit`` and
    ``evaluate`` return. Without the thread, ``AUTOTUNE`` takes tf.data's static defaults:
    ``map`` runs min(16, CPU cores) calls at once, ``interleave`` reads all ``cycle_length``
    files at once, and ``prefetch`` sizes its buffer with its own (thread-free) tuner. The
    elements and their order are the same.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def keep_off_gpus() -> list[str]:
    """Hides the GPUs from TensorFlow, where it only reads data for JAX; returns their names.

    TensorFlow's first operation would otherwise claim nearly all of each GPU's memory, which
    JAX (also preallocating) then lacks. Must run before TensorFlow starts its runtime.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_visible_devices([], "GPU")
    return [d.name for d in gpus]


def feature_spec(spec: DataSpec) -> dict:
    seq, pred = spec.max_seq_length, spec.max_predictions_per_seq
    return {
        "input_ids": tf.io.FixedLenFeature([seq], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([pred], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([pred], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([pred], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def _split_features(parsed: dict) -> tuple[dict, dict]:
    # TPUs want int32; the weights stay float32.
    as_int = {k: tf.cast(v, tf.int32) for k, v in parsed.items() if v.dtype == tf.int64}
    features = {k: as_int[k] for k in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")}
    labels = {
        "masked_lm_ids": as_int["masked_lm_ids"],
        "masked_lm_weights": parsed["masked_lm_weights"],
        "next_sentence_labels": tf.reshape(as_int["next_sentence_labels"], [-1]),  # [B]
    }
    return features, labels


def shard_files(pattern: str, num_shards: int = 1, shard_index: int = 0) -> list[str]:
    """Every ``num_shards``-th file of ``pattern`` from ``shard_index`` (one shard per host);
    refused when there are fewer files than shards."""
    files = list_files(pattern)
    if num_shards > 1 and len(files) < num_shards:
        raise ValueError(f"{pattern}: {len(files)} file(s) cannot be sharded over {num_shards} hosts")
    return files[shard_index::num_shards]


def list_files(pattern: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no files match {pattern}")
    return files


def check_records(files: list[str], spec: DataSpec) -> None:
    """Reads the first record of ``files[0]`` and refuses it unless its features fit ``spec``.

    Raises:
        ValueError: naming the file, the feature, its length and the expected length.
    """
    dataset = tf.data.TFRecordDataset(files[:1], compression_type=spec.compression or "")
    try:
        record = next(iter(dataset.take(1)), None)
    except tf.errors.OpError as e:
        raise ValueError(
            f"{files[0]}: cannot read a TFRecord (compression={spec.compression}): {e.message}"
        ) from e
    if record is None:
        return  # an empty shard: nothing to check here
    example = tf.train.Example.FromString(record.numpy())
    expected = {
        "input_ids": spec.max_seq_length,
        "input_mask": spec.max_seq_length,
        "segment_ids": spec.max_seq_length,
        "masked_lm_positions": spec.max_predictions_per_seq,
        "masked_lm_ids": spec.max_predictions_per_seq,
        "masked_lm_weights": spec.max_predictions_per_seq,
        "next_sentence_labels": 1,
    }
    problems = []
    for name, length in expected.items():
        if name not in example.features.feature:
            problems.append(f"feature {name!r} is missing")
            continue
        feature = example.features.feature[name]
        values = feature.float_list.value if name == "masked_lm_weights" else feature.int64_list.value
        if len(values) != length:
            flag = "max_seq_length" if length == spec.max_seq_length else "max_predictions_per_seq"
            problems.append(f"{name} has length {len(values)} but {flag}={length} ({spec.source})")
    if problems:
        raise ValueError(f"{files[0]}: the first record does not fit the data spec: " + "; ".join(problems))


def count_records(spec: DataSpec, pattern: str | list[str]) -> int:
    """Records in the files of ``pattern`` (or in a list of files; reads them all)."""
    files = list_files(pattern) if isinstance(pattern, str) else pattern
    if not files:
        return 0
    ds = tf.data.TFRecordDataset(files, compression_type=spec.compression or "")
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def make_dataset(
    spec: DataSpec,
    *,
    pattern: str,
    batch_size: int,
    seed: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The training dataset: endless ``(features, labels)`` batches of ``batch_size`` (static
    shape), shuffled (evaluation reads with ``make_eval_dataset``).

    Args:
        spec: shapes and compression of the records.
        pattern: the files to read (glob, local or ``gs://``).
        batch_size: examples per batch produced by this input pipeline.
        seed: seed of both shuffles; the order is the same for the same seed.
        num_shards, shard_index: read only every ``num_shards``-th file from ``shard_index``
            (one shard per host); refused when there are fewer files than shards.
        skip_batches: batches to skip at the start (an exact continuation after a resume).
    """
    files = shard_files(pattern, num_shards, shard_index)
    compression = spec.compression or ""
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(CYCLE_LENGTH, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # a fixed order for a fixed seed
    )
    ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed + 1, reshuffle_each_iteration=True)
    if skip_batches:
        ds = ds.skip(skip_batches * batch_size)  # raw records: skipped before parsing
    ds = ds.batch(batch_size, drop_remainder=True)
    parse_spec = feature_spec(spec)
    ds = ds.map(
        lambda records: _split_features(tf.io.parse_example(records, parse_spec)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return without_autotune_thread(ds.prefetch(tf.data.AUTOTUNE))


def _padded(batch_size: int):
    """Fills a parsed batch of n <= ``batch_size`` examples up to ``batch_size``; adds
    ``example_weights`` (1 for the n examples, 0 for the padding). A padding example is all
    zeros but for ``input_mask``, which keeps its first position so attention stays finite."""

    def pad(features: dict, labels: dict) -> tuple[dict, dict]:
        n = tf.shape(features["input_ids"])[0]
        missing = batch_size - n

        def fill(t):
            t = tf.pad(t, [[0, missing]] + [[0, 0]] * (len(t.shape) - 1))
            return tf.ensure_shape(t, [batch_size, *t.shape[1:]])

        features = {k: fill(v) for k, v in features.items()}
        rows = tf.range(batch_size)[:, None]
        first = tf.range(features["input_mask"].shape[1])[None, :] == 0
        features["input_mask"] = tf.where((rows >= n) & first, 1, features["input_mask"])
        labels = {k: fill(v) for k, v in labels.items()}
        labels[EXAMPLE_WEIGHTS] = fill(tf.ones([n], tf.float32))
        return features, labels

    return pad


def eval_batches(spec: DataSpec, pattern: str, *, batch_size: int, num_shards: int = 1) -> tuple[int, int]:
    """``(examples, batches)`` of the validation split: all its examples, and the batches each
    of ``num_shards`` hosts runs to see its own shard whole (the largest shard's count, rounded
    up). One host takes the count of ``metadata.json`` when it has one for ``pattern``; else
    every record is read once."""
    if num_shards == 1 and pattern == spec.eval_pattern and spec.num_eval_examples is not None:
        counts = [spec.num_eval_examples]
    else:
        counts = [count_records(spec, shard_files(pattern, num_shards, i)) for i in range(num_shards)]
    return sum(counts), -(-max(counts) // batch_size)


def make_eval_dataset(
    spec: DataSpec, *, pattern: str, batch_size: int, batches: int, num_shards: int = 1, shard_index: int = 0
) -> tf.data.Dataset:
    """``batches`` batches of ``batch_size`` over this host's shard of the validation split, in
    order, each example once; what is left over after the shard is padding of weight 0
    (``example_weights``). ``batches`` comes from ``eval_batches`` (fewer evaluate a prefix)."""
    files = shard_files(pattern, num_shards, shard_index)
    parse_spec = feature_spec(spec)
    records = tf.data.TFRecordDataset(files, compression_type=spec.compression or "")
    ds = records.batch(batch_size).map(lambda r: _split_features(tf.io.parse_example(r, parse_spec)))
    ds = ds.map(_padded(batch_size))
    # Whole batches of padding after the shard, for a host whose shard holds fewer batches.
    seq, pred = spec.max_seq_length, spec.max_predictions_per_seq
    empty = (
        {k: tf.zeros([0, seq], tf.int32) for k in ("input_ids", "input_mask", "segment_ids")}
        | {"masked_lm_positions": tf.zeros([0, pred], tf.int32)},
        {
            "masked_lm_ids": tf.zeros([0, pred], tf.int32),
            "masked_lm_weights": tf.zeros([0, pred], tf.float32),
            "next_sentence_labels": tf.zeros([0], tf.int32),
        },
    )
    padding = tf.data.Dataset.from_tensors(_padded(batch_size)(*empty)).repeat()
    ds = ds.concatenate(padding).take(batches)
    return without_autotune_thread(ds.prefetch(tf.data.AUTOTUNE))


def make_synthetic_dataset(
    spec: DataSpec, *, batch_size: int, vocab_size: int, seed: int = 0
) -> tf.data.Dataset:
    """Random batches of the right shapes and value ranges, a new one per step (no files)."""
    seq, pred = spec.max_seq_length, spec.max_predictions_per_seq

    def batch(index):
        s = tf.stack([tf.cast(seed, tf.int64), index])
        ids = tf.random.stateless_uniform([batch_size, seq], s, 5, vocab_size, dtype=tf.int32)
        scores = tf.random.stateless_uniform([batch_size, seq - 1], s + 1)
        positions = tf.sort(tf.argsort(scores, axis=-1)[:, :pred] + 1, axis=-1)  # [B, P] in 1..L-1
        half = seq // 2
        features = {
            "input_ids": ids,
            "input_mask": tf.ones([batch_size, seq], tf.int32),
            "segment_ids": tf.concat(
                [tf.zeros([batch_size, half], tf.int32), tf.ones([batch_size, seq - half], tf.int32)], axis=1
            ),
            "masked_lm_positions": tf.cast(positions, tf.int32),
        }
        labels = {
            "masked_lm_ids": tf.gather(ids, positions, batch_dims=1),
            "masked_lm_weights": tf.ones([batch_size, pred], tf.float32),
            "next_sentence_labels": tf.random.stateless_uniform([batch_size], s + 2, 0, 2, dtype=tf.int32),
        }
        return features, labels

    ds = tf.data.Dataset.range(2**62).map(batch, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune_thread(ds.prefetch(tf.data.AUTOTUNE))
