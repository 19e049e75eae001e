"""The pretraining stage end to end on real Hindi text with Beam's DirectRunner."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import build
from beam_pipelines.pretraining import stage
from beam_pipelines.pretraining.example_codec import iter_framed

L, P = 64, 10


def run_stage(config: stage.PretrainingConfig, beam_args=()) -> dict:
    """What ``beam_pipelines.build`` does for one stage."""
    stage.preflight(config)
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    stage.build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return stage.finalize(config, result)


def _workspace_copy(src: Path, dst: Path) -> Path:
    for part in ("corpus", "vocab", "reports"):
        shutil.copytree(src / part, dst / part)
    return dst


def _parse_files(paths, compression=None):
    import tensorflow as tf

    spec = {
        "input_ids": tf.io.FixedLenFeature([L], tf.int64),
        "input_mask": tf.io.FixedLenFeature([L], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([L], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([P], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([P], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([P], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    ds = tf.data.TFRecordDataset([str(p) for p in paths], compression_type=compression)
    return [{k: v.numpy().tolist() for k, v in tf.io.parse_single_example(r, spec).items()} for r in ds]


def _config(out: Path, **kw) -> stage.PretrainingConfig:
    base = dict(output_dir=str(out), num_shards=3, max_seq_length=L, max_predictions_per_seq=P, dupe_factor=2,
                bucket_size=16)
    base.update(kw)
    return stage.PretrainingConfig(**base)


@pytest.fixture(scope="module")
def nsp_out(hindi_workspace, tmp_path_factory):
    out = _workspace_copy(hindi_workspace, tmp_path_factory.mktemp("nsp"))
    metadata = run_stage(_config(out))
    return out, metadata


def test_metadata_describes_the_files(nsp_out, hindi_vocab):
    out, metadata = nsp_out
    seq = out / "pretraining" / f"seq{L}"
    on_disk = json.loads((seq / "metadata.json").read_text())
    assert on_disk == metadata
    assert metadata["format"] == "bert-pretraining-tfrecord" and metadata["format_version"] == 1
    assert metadata["vocab_size"] == hindi_vocab.vocab_size == 8000
    assert metadata["special_token_ids"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert metadata["nsp"] is True and metadata["compression"] is None
    assert (metadata["max_seq_length"], metadata["max_predictions_per_seq"], metadata["dupe_factor"]) == (L, P, 2)
    assert (out / metadata["vocab_file"]).is_file() and (out / metadata["tokenizer_file"]).is_file()
    corpus = json.loads((out / "reports" / "corpus.json").read_text())
    assert metadata["input_counts"]["documents_kept"] == corpus["documents_kept"]
    assert metadata["input_counts"]["documents_dropped"] == corpus["documents_dropped"]
    for split in ("train", "validation"):
        info = metadata["splits"][split]
        files = sorted(seq.glob(info["file_pattern"]))
        assert [f.name for f in files] == [f"{split}-{i:05d}-of-00003.tfrecord" for i in range(3)]
        assert info["num_files"] == 3
        assert sum(1 for f in files for _ in iter_framed(f.read_bytes())) == info["num_examples"] > 0
    assert not (seq / stage.SPILL_DIR_NAME).exists()
    assert sorted(p.name for p in seq.iterdir()) == sorted(
        ["metadata.json"] + [f"{s}-{i:05d}-of-00003.tfrecord" for s in ("train", "validation") for i in range(3)])


def test_records_parse_and_hold_what_users_rely_on(nsp_out):
    out, metadata = nsp_out
    seq = out / "pretraining" / f"seq{L}"
    records = _parse_files(sorted(seq.glob("train-*.tfrecord")))
    assert len(records) == metadata["splits"]["train"]["num_examples"]
    labels = Counter()
    for r in records:
        n = sum(r["input_mask"])
        ids = r["input_ids"]
        assert r["input_mask"] == [1] * n + [0] * (L - n)
        assert ids[0] == 2 and ids[n - 1] == 3 and all(t == 0 for t in ids[n:])
        k = int(sum(r["masked_lm_weights"]))
        assert k == min(P, max(1, round(n * 0.15)))
        pos = r["masked_lm_positions"][:k]
        assert pos == sorted(set(pos)) and all(0 < p < n for p in pos)
        assert not {0, 2, 3} & set(r["masked_lm_ids"][:k])
        assert all(ids[p] != 3 for p in pos)
        seg = r["segment_ids"]
        first_sep = ids.index(3)
        assert seg == [0] * (first_sep + 1) + [1] * (n - first_sep - 1) + [0] * (L - n)
        labels[r["next_sentence_labels"][0]] += 1
    assert 0.45 < labels[1] / len(records) < 0.7


def test_report_counts_the_data(nsp_out):
    out, metadata = nsp_out
    report = json.loads((out / "reports" / "pretraining.json").read_text())
    for split in ("train", "validation"):
        s = report["splits"][split]
        assert s["instances"] == metadata["splits"][split]["num_examples"]
        assert sum(s["seq_length_histogram"].values()) == s["instances"]
        assert s["nsp"]["actual_next"] + s["nsp"]["random_next"] == s["instances"]
        assert 0.0 <= s["unk_share"] < 0.01
        assert s["top_tokens"][0][1] >= s["top_tokens"][1][1]
    assert report["metrics"]["train_instances_written"] == metadata["splits"]["train"]["num_examples"]
    for name in ("pretraining_lengths.png", "pretraining_balance.png", "pretraining_top_tokens.png"):
        assert (out / "reports" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_instances_of_a_document_spread_over_the_shards(nsp_out, hindi_token_docs):
    out, _ = nsp_out
    seq = out / "pretraining" / f"seq{L}"
    # A sentence's first 5 tokens identify its document (where A was not cut at the front).
    start_of = {}
    for d, doc in enumerate(hindi_token_docs):
        for s in doc:
            if len(s) >= 5:
                start_of.setdefault(tuple(s[:5]), d)
    shards_of = {}
    for shard in range(3):
        for r in _parse_files([seq / f"train-{shard:05d}-of-00003.tfrecord"]):
            d = start_of.get(tuple(r["input_ids"][1:6]))
            if d is not None:
                shards_of.setdefault(d, []).append(shard)
    big = [s for s in shards_of.values() if len(s) >= 12]
    assert len(big) >= 10
    assert sum(len(set(s)) == 3 for s in big) / len(big) > 0.9


def test_one_and_two_workers_write_identical_bytes(nsp_out, tmp_path):
    out, _ = nsp_out
    other = _workspace_copy(out, tmp_path / "two")
    run_stage(_config(other), ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    seq_a, seq_b = out / "pretraining" / f"seq{L}", other / "pretraining" / f"seq{L}"
    names = sorted(p.name for p in seq_a.glob("*.tfrecord"))
    assert names == sorted(p.name for p in seq_b.glob("*.tfrecord"))
    for name in names:
        assert (seq_a / name).read_bytes() == (seq_b / name).read_bytes(), name


def test_gzip_and_no_nsp(hindi_workspace, tmp_path):
    out = _workspace_copy(hindi_workspace, tmp_path / "packed")
    metadata = run_stage(_config(out, nsp=False, gzip=True, whole_word_masking=True, dupe_factor=1))
    seq = out / "pretraining" / f"seq{L}"
    assert metadata["nsp"] is False and metadata["compression"] == "GZIP"
    assert metadata["masking"]["whole_word_masking"] is True
    files = sorted(seq.glob(metadata["splits"]["train"]["file_pattern"]))
    assert len(files) == 3 and all(f.name.endswith(".tfrecord.gz") for f in files)
    assert all(f.read_bytes()[4:8] == b"\x00\x00\x00\x00" for f in files)  # gzip mtime 0: reproducible
    records = _parse_files(files, compression="GZIP")
    assert len(records) == metadata["splits"]["train"]["num_examples"]
    assert all(r["next_sentence_labels"] == [0] and not any(r["segment_ids"]) for r in records)
    # About short_seq_prob of the sequences are short on purpose; the rest are full.
    assert sum(sum(r["input_mask"]) == L for r in records) / len(records) > 0.85
    assert sum(len(gzip.decompress(f.read_bytes())) for f in files) > sum(f.stat().st_size for f in files)


def test_preflight_names_what_is_missing(tmp_path, hindi_workspace):
    with pytest.raises(FileNotFoundError, match="corpus"):
        stage.preflight(_config(tmp_path))
    shutil.copytree(hindi_workspace / "corpus", tmp_path / "corpus")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        stage.preflight(_config(tmp_path))
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        stage.preflight(_config(tmp_path))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_seq_length", "4"], "--max_seq_length"),
        (["--max_predictions_per_seq", "0"], "--max_predictions_per_seq"),
        (["--masked_lm_prob", "1.5"], "--masked_lm_prob"),
        (["--dupe_factor", "0"], "--dupe_factor"),
        (["--short_seq_prob", "-0.1"], "--short_seq_prob"),
        (["--bucket_size", "1"], "--bucket_size"),
    ],
)
def test_bad_flags_are_named(flags, message):
    args = build.make_parser().parse_args(["--output_dir", "/tmp/x", *flags])
    with pytest.raises(ValueError, match=message):
        stage.config_from_args(args)


def test_flags_build_the_config():
    args = build.make_parser().parse_args(
        ["--output_dir", "/o", "--max_seq_length", "512", "--max_predictions_per_seq", "76", "--dupe_factor", "3",
         "--whole_word_masking", "--no_nsp", "--gzip", "--num_shards", "8", "--seed", "7", "--bucket_size", "100"])
    config = stage.config_from_args(args)
    assert config == stage.PretrainingConfig(
        output_dir="/o", seed=7, num_shards=8, max_seq_length=512, max_predictions_per_seq=76, dupe_factor=3,
        whole_word_masking=True, nsp=False, gzip=True, bucket_size=100)
    assert config.seq_dir == "/o/pretraining/seq512"


def test_the_driver_runs_the_stage(hindi_workspace, tmp_path):
    out = _workspace_copy(hindi_workspace, tmp_path / "cli")
    results = build.run(["--stages", "pretraining", "--output_dir", str(out), "--max_seq_length", "32",
                         "--max_predictions_per_seq", "5", "--dupe_factor", "1", "--num_shards", "2",
                         "--seed", "3"])
    metadata = results["pretraining"]
    assert json.loads((out / "pretraining" / "seq32" / "metadata.json").read_text()) == metadata
    assert metadata["seed"] == 3 and metadata["max_seq_length"] == 32
    assert metadata["splits"]["train"]["file_pattern"] == "train-*-of-00002.tfrecord"
    assert metadata["splits"]["train"]["num_examples"] > 0


def test_stage_on_generated_text_without_the_shared_corpus(tmp_path):
    """A small generated corpus: the stage's contract holds wherever the tests run."""
    from tests.pretraining import helpers

    words = ["भारत", "हिन्दी", "भाषा", "में", "कुछ", "शब्द", "है", "और", "के", "लिए", "यह", "एक", "नदी", "पानी"]
    rng = __import__("random").Random(0)
    docs = [[" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) + " ।" for _ in range(rng.randint(1, 9))]
            for _ in range(120)]
    counts = helpers.write_corpus(tmp_path, docs, num_shards=2, validation_every=6)
    helpers.write_vocab(tmp_path, docs, vocab_size=200)
    metadata = run_stage(_config(tmp_path, num_shards=2, bucket_size=8))
    assert "records_malformed" not in metadata["input_counts"]  # no corpus.json: own counters
    assert metadata["input_counts"]["documents_kept"] == sum(counts.values())
    seq = tmp_path / "pretraining" / f"seq{L}"
    for split in ("train", "validation"):
        files = sorted(seq.glob(metadata["splits"][split]["file_pattern"]))
        n = sum(1 for f in files for _ in iter_framed(f.read_bytes()))
        assert n == metadata["splits"][split]["num_examples"] > 0
    # A rerun with other shard settings leaves only its own files for the trainer's glob.
    metadata = run_stage(_config(tmp_path, num_shards=3, bucket_size=8, gzip=True))
    for split in ("train", "validation"):
        names = sorted(p.name for p in seq.glob(f"{split}-*"))
        assert names == [f"{split}-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
