"""Every storage client of the project against the GCS emulator on 127.0.0.1 (marked ``gcs``).

google-cloud-storage, Beam's FileSystems (through ``beam_pipelines.io_utils``), Beam pipelines
on the DirectRunner (in process and with two worker processes) and TensorFlow's ``gs://``
filesystem (``tf.io.gfile``, ``tf.data.TFRecordDataset``, ``tf.train.Checkpoint``) all read and
write the same emulated bucket.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.gcs

HINDI = "हिन्दी भाषा में कुछ शब्द।\nदूसरी पंक्ति।\n"


def _bucket_and_name(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def test_storage_client_round_trip(gcs_emulator, gcs_prefix):
    from google.cloud import storage

    client = storage.Client()
    bucket_name, prefix = _bucket_and_name(gcs_prefix)
    bucket = client.bucket(bucket_name)
    bucket.blob(f"{prefix}/a.txt").upload_from_string(HINDI.encode("utf-8"))
    bucket.blob(f"{prefix}/sub/b.bin").upload_from_string(bytes(range(256)))
    bucket.blob(f"{prefix}/empty").upload_from_string(b"")

    assert bucket.blob(f"{prefix}/a.txt").download_as_bytes().decode("utf-8") == HINDI
    assert bucket.blob(f"{prefix}/sub/b.bin").download_as_bytes() == bytes(range(256))
    assert bucket.blob(f"{prefix}/empty").download_as_bytes() == b""
    listed = {(b.name, b.size) for b in client.list_blobs(bucket_name, prefix=f"{prefix}/")}
    assert listed == {(f"{prefix}/a.txt", len(HINDI.encode())), (f"{prefix}/sub/b.bin", 256),
                      (f"{prefix}/empty", 0)}
    bucket.blob(f"{prefix}/sub/b.bin").delete()
    assert not bucket.blob(f"{prefix}/sub/b.bin").exists()


def test_io_utils_match_write_atomic_read(gcs_emulator, gcs_prefix):
    from beam_pipelines import io_utils

    target = io_utils.join(gcs_prefix, "reports", "corpus.json")
    io_utils.write_json_atomic(target, {"documents_kept": 3, "भाषा": "hi"})
    io_utils.write_atomic(io_utils.join(gcs_prefix, "corpus", "train-00000-of-00002.txt"), HINDI.encode())
    io_utils.write_atomic(io_utils.join(gcs_prefix, "corpus", "train-00001-of-00002.txt"), b"x\n")
    # Overwriting keeps one file with the new bytes and leaves no temporary file behind.
    io_utils.write_atomic(io_utils.join(gcs_prefix, "corpus", "train-00001-of-00002.txt"), b"y\n")

    assert json.loads(io_utils.read_text(target)) == {"documents_kept": 3, "भाषा": "hi"}
    assert io_utils.exists(target)
    assert not io_utils.exists(io_utils.join(gcs_prefix, "reports", "vocab.json"))
    matched = io_utils.match_patterns([f"{gcs_prefix}/corpus/train-*"])
    assert matched == [f"{gcs_prefix}/corpus/train-00000-of-00002.txt",
                       f"{gcs_prefix}/corpus/train-00001-of-00002.txt"]
    assert io_utils.read_bytes(matched[1]) == b"y\n"
    assert io_utils.match_patterns([f"{gcs_prefix}/**"]) == sorted([target, *matched])
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        io_utils.match_patterns([f"{gcs_prefix}/nothing-here/*"])


def _word_count_pipeline(options: list[str], *, src: str, out: str) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines import io_utils

    class WriteGroup(beam.DoFn):
        """Writes each (first letter, words) group to its own file with io_utils."""

        def process(self, element):
            key, words = element
            path = io_utils.join(out, "by_letter", f"{ord(key):05d}.txt")
            io_utils.write_atomic(path, ("\n".join(sorted(words)) + "\n").encode("utf-8"))
            yield path

    with beam.Pipeline(options=PipelineOptions(options)) as p:
        words = (p | "Read" >> beam.io.ReadFromText(f"{src}/*.txt")
                 | "Split" >> beam.FlatMap(str.split))
        (words | "Count" >> beam.combiners.Count.PerElement()
         | "Format" >> beam.MapTuple(lambda w, n: f"{w}\t{n}")
         | "Write" >> beam.io.WriteToText(f"{out}/counts", file_name_suffix=".tsv", num_shards=2))
        (words | "Key" >> beam.Map(lambda w: (w[0], w)) | "Group" >> beam.GroupByKey()
         | "WriteGroups" >> beam.ParDo(WriteGroup()))


@pytest.mark.parametrize("options", [
    pytest.param(["--runner=DirectRunner"], id="in_process"),
    pytest.param(["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                 id="two_worker_processes"),
])
def test_beam_pipeline_reads_and_writes_gcs(gcs_emulator, gcs_prefix, options):
    from beam_pipelines import io_utils

    src, out = f"{gcs_prefix}/in", f"{gcs_prefix}/out"
    io_utils.write_atomic(f"{src}/a.txt", "क ख ग\nक ख\n".encode())
    io_utils.write_atomic(f"{src}/b.txt", "क\nघ ख\n".encode())
    _word_count_pipeline(options, src=src, out=out)

    shards = io_utils.match_patterns([f"{out}/counts-*.tsv"])
    assert [s.rsplit("/", 1)[1] for s in shards] == ["counts-00000-of-00002.tsv", "counts-00001-of-00002.tsv"]
    counts = dict(line.split("\t") for s in shards for line in io_utils.read_text(s).splitlines())
    assert counts == {"क": "3", "ख": "3", "ग": "1", "घ": "1"}
    groups = io_utils.match_patterns([f"{out}/by_letter/*.txt"])
    assert len(groups) == 4
    assert io_utils.read_text(f"{out}/by_letter/{ord('क'):05d}.txt") == "क\nक\nक\n"


def test_tensorflow_gfile_tfrecord_and_checkpoint(tf_gcs, gcs_prefix):
    import apache_beam as beam
    import numpy as np
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines import io_utils

    text_path = f"{gcs_prefix}/tf/hello.txt"
    with tf.io.gfile.GFile(text_path, "w") as f:
        f.write(HINDI)
    with tf.io.gfile.GFile(text_path) as f:
        assert f.read() == HINDI
    assert io_utils.read_text(text_path) == HINDI  # the same object, seen by Beam's GCS IO
    tf.io.gfile.makedirs(f"{gcs_prefix}/tf/model/ckpt")
    assert tf.io.gfile.isdir(f"{gcs_prefix}/tf/model/ckpt")

    # TFRecords written by a Beam pipeline, read by tf.data (the trainer's input path).
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=[2, 100 + i, 3]))}))
        for i in range(6)]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        (p | beam.Create([ex.SerializeToString() for ex in examples])
         | beam.io.WriteToTFRecord(f"{gcs_prefix}/tf/data/train", file_name_suffix=".tfrecord", num_shards=2))
    files = tf.io.gfile.glob(f"{gcs_prefix}/tf/data/train-*.tfrecord")
    assert [f.rsplit("/", 1)[1] for f in files] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert io_utils.match_patterns([f"{gcs_prefix}/tf/data/*.tfrecord"]) == files
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.parse_single_example(r, {"input_ids": tf.io.FixedLenFeature([3], tf.int64)})["input_ids"])
    ids = sorted(int(x[1]) for x in ds.as_numpy_iterator())
    assert ids == [100, 101, 102, 103, 104, 105]

    # A checkpoint written to and restored from gs:// (the trainer's model dir).
    weights = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    ckpt = tf.train.Checkpoint(weights=weights)
    manager = tf.train.CheckpointManager(ckpt, f"{gcs_prefix}/tf/model/ckpt", max_to_keep=2)
    manager.save(checkpoint_number=7)
    weights.assign(tf.zeros_like(weights))
    restored = tf.train.Checkpoint(weights=weights)
    restored.restore(tf.train.latest_checkpoint(f"{gcs_prefix}/tf/model/ckpt")).assert_consumed()
    np.testing.assert_array_equal(weights.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tf.train.latest_checkpoint(f"{gcs_prefix}/tf/model/ckpt").endswith("ckpt-7")

    tf.io.gfile.rename(text_path, f"{gcs_prefix}/tf/renamed.txt")
    assert not tf.io.gfile.exists(text_path)
    assert sorted(tf.io.gfile.listdir(f"{gcs_prefix}/tf")) == ["data/", "model/", "renamed.txt"]
    tf.io.gfile.rmtree(f"{gcs_prefix}/tf/data")
    assert tf.io.gfile.glob(f"{gcs_prefix}/tf/data/*") == []
