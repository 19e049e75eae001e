"""Input-pipeline benchmark: examples/s of the trainer's tf.data pipeline from TFRecords.

Writes a few thousand records in the TFRecord contract's format (docs/data_format.md) to a
temporary directory, then reads them in training mode (shuffle, repeat, interleave, batch,
parse) with nothing downstream, as fast as the pipeline goes. In the same run, the baseline:
google-research/bert's ``run_pretraining.py`` input function (parse each record on its own,
then batch), rebuilt in TF 2 from the same files. The accelerator needs at most a few
thousand examples/s (docs/benchmarks_trainer.md); the pipeline must stay far ahead of that.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.input_pipeline --records 8192 --batch_size 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from trainer import input_pipeline
from trainer.data_spec import DataSpec


def write_records(
    directory: str,
    *,
    num_files: int,
    records_per_file: int,
    seq_length: int,
    max_predictions: int,
    vocab_size: int,
    seed: int = 0,
    gzip: bool = False,
) -> str:
    """Writes ``num_files`` TFRecord files of random contract-format examples; returns their glob."""
    rng = np.random.default_rng(seed)
    suffix = ".tfrecord.gz" if gzip else ".tfrecord"
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")

    def int_feature(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    for shard in range(num_files):
        path = os.path.join(directory, f"train-{shard:05d}-of-{num_files:05d}{suffix}")
        with tf.io.TFRecordWriter(path, options) as writer:
            for _ in range(records_per_file):
                length = int(rng.integers(seq_length // 2, seq_length + 1))
                ids = np.zeros(seq_length, np.int64)
                ids[:length] = rng.integers(5, vocab_size, size=length)
                mask = (np.arange(seq_length) < length).astype(np.int64)
                segments = ((np.arange(seq_length) >= length // 2) & (mask == 1)).astype(np.int64)
                num_pred = min(max_predictions, max(1, round(length * 0.15)))
                positions = np.zeros(max_predictions, np.int64)
                positions[:num_pred] = np.sort(rng.choice(np.arange(1, length - 1), num_pred, replace=False))
                masked_ids = np.zeros(max_predictions, np.int64)
                masked_ids[:num_pred] = ids[positions[:num_pred]]
                weights = np.zeros(max_predictions, np.float32)
                weights[:num_pred] = 1.0
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "input_ids": int_feature(ids),
                            "input_mask": int_feature(mask),
                            "segment_ids": int_feature(segments),
                            "masked_lm_positions": int_feature(positions),
                            "masked_lm_ids": int_feature(masked_ids),
                            "masked_lm_weights": tf.train.Feature(
                                float_list=tf.train.FloatList(value=weights)
                            ),
                            "next_sentence_labels": int_feature([rng.integers(0, 2)]),
                        }
                    )
                )
                writer.write(example.SerializeToString())
    return os.path.join(directory, f"train-*-of-{num_files:05d}{suffix}")


def reference_dataset(spec: DataSpec, *, pattern: str, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """google-research/bert's training input_fn, in TF 2: per-record parse, then batch."""
    parse_spec = input_pipeline.feature_spec(spec)
    files = sorted(tf.io.gfile.glob(pattern))
    compression = spec.compression or ""

    def decode(record):
        example = tf.io.parse_single_example(record, parse_spec)
        return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in example.items()}

    ds = tf.data.Dataset.from_tensor_slices(files).repeat().shuffle(len(files), seed=seed)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,  # the reference's sloppy parallel_interleave
    )
    ds = ds.shuffle(100, seed=seed + 1)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def time_dataset(ds: tf.data.Dataset, *, batch_size: int, batches: int, warmup: int) -> dict:
    """Pulls ``warmup`` then ``batches`` batches; returns examples/s over the timed ones."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    elapsed = time.perf_counter() - t
    features = batch[0] if isinstance(batch, tuple) else batch
    return {
        "examples_per_s": batches * batch_size / elapsed,
        "batches": batches,
        "seconds": elapsed,
        "shapes": {k: list(v.shape) for k, v in features.items()},
        "dtypes": {k: v.dtype.name for k, v in features.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=8192, help="records written in total")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--gzip", action="store_true", help="write and read GZIP-compressed records")
    parser.add_argument("--out", default="/tmp/input_pipeline.json")
    args = parser.parse_args(argv)
    if args.records < args.files or args.records < args.batch_size:
        parser.error(
            f"--records {args.records} must be >= --files {args.files} and >= --batch_size {args.batch_size}"
        )

    with tempfile.TemporaryDirectory(prefix="bert_input_bench_") as tmp:
        t = time.perf_counter()
        pattern = write_records(
            tmp,
            num_files=args.files,
            records_per_file=args.records // args.files,
            seq_length=args.seq_length,
            max_predictions=args.max_predictions,
            vocab_size=args.vocab_size,
            gzip=args.gzip,
        )
        write_s = time.perf_counter() - t
        size_mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6
        spec = DataSpec(
            train_pattern=pattern,
            eval_pattern=None,
            max_seq_length=args.seq_length,
            max_predictions_per_seq=args.max_predictions,
            vocab_size=args.vocab_size,
            compression="GZIP" if args.gzip else None,
            source="benchmark",
        )
        common = dict(batch_size=args.batch_size, batches=args.batches, warmup=args.warmup)
        ours = time_dataset(
            input_pipeline.make_dataset(spec, pattern=pattern, batch_size=args.batch_size),
            **common,
        )
        reference = time_dataset(
            reference_dataset(spec, pattern=pattern, batch_size=args.batch_size), **common
        )
    result = {
        "args": vars(args),
        "tensorflow": tf.__version__,
        "cpu_cores": os.cpu_count(),
        "written_mb": size_mb,
        "write_s": write_s,
        "trainer_input_pipeline": ours,
        "reference_per_record_parse": reference,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"{args.records} records in {args.files} files ({size_mb:.1f} MB{', gzip' if args.gzip else ''}), "
        f"batch {args.batch_size}, seq {args.seq_length}, P {args.max_predictions}, {os.cpu_count()} cores"
    )
    print(f"trainer.input_pipeline (batch, then vectorized parse): {ours['examples_per_s']:>9.0f} examples/s")
    print(
        f"reference (parse each record, then batch):             {reference['examples_per_s']:>9.0f} examples/s"
    )
    print(f"feature shapes {ours['shapes']}, dtypes {sorted(set(ours['dtypes'].values()))}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
