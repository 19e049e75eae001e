"""The corpus stage end to end: flags, preflight, the bundled sample, bad input, determinism."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import unicodedata

import pytest

from beam_pipelines.corpus import stage
from tests.corpus.helpers import parse_corpus_args, read_outputs, record, rejected_entries, run_corpus

BAD_FLAGS = [
    (["--validation_fraction", "1.0"], "--validation_fraction"),
    (["--validation_fraction", "-0.1"], "--validation_fraction"),
    (["--min_language_prob", "1.5"], "--min_language_prob"),
    (["--min_devanagari_share", "2"], "--min_devanagari_share"),
    (["--min_document_chars", "-1"], "--min_document_chars"),
    (["--min_harmful_pp", "-3"], "--min_harmful_pp"),
    (["--num_shards", "0"], "--num_shards"),
    (["--input", " , "], "--input"),
    (["--language", " "], "--language"),
    (["--read_split_mb", "0"], "--read_split_mb"),
    (["--max_record_mb", "0"], "--max_record_mb"),
]


@pytest.mark.parametrize("flags,name", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_values_name_the_flag(flags, name):
    with pytest.raises(ValueError, match=name):
        parse_corpus_args(["--output_dir", "/tmp/unused", *flags])


def test_flag_parsing():
    config = parse_corpus_args(["--output_dir", "o", "--input", "a/*.zst, b/*.gz", "--drop_quality_warnings",
                                "tiny, noisy,tiny", "--drop_categories", "", "--min_harmful_pp", "0", "--no_dedup",
                                "--num_shards", "20", "--validation_fraction", "0.01", "--read_split_mb", "0.5"])
    assert config.input_patterns == ("a/*.zst", "b/*.gz")
    assert config.drop_quality_warnings == ("noisy", "tiny")
    assert config.drop_categories == ()
    assert config.min_harmful_pp is None
    assert config.dedup is False
    assert (config.train_shards, config.validation_shards) == (20, 1)
    assert config.read_split_bytes == 512 * 1024
    assert parse_corpus_args(["--output_dir", "o"]).input_patterns == (stage.DEFAULT_INPUT,)


def test_preflight_names_the_pattern_that_matches_nothing(tmp_path):
    (tmp_path / "a.jsonl.zst").write_bytes(b"")
    config = parse_corpus_args(["--output_dir", str(tmp_path / "out"),
                                "--input", f"{tmp_path}/*.jsonl.zst,{tmp_path}/missing_*.jsonl.zst"])
    with pytest.raises(FileNotFoundError, match="missing_"):
        stage.preflight(config)


def test_preflight_names_a_file_of_unknown_format(tmp_path):
    (tmp_path / "hi.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="hi.parquet"):
        stage.preflight(parse_corpus_args(["--output_dir", str(tmp_path / "o"), "--input", f"{tmp_path}/*"]))


def test_bundled_sample(tmp_path):
    out = tmp_path / "out"
    config, report = run_corpus(["--output_dir", str(out)])
    # The counts the sample was built to give (beam_pipelines/sample_data/README.md).
    assert report["records_read"] == 894
    assert report["records_malformed"] == 0
    assert report["documents_kept"] == 802
    assert report["documents_dropped"] == {"category": 0, "duplicate": 30, "harmful_pp": 10, "language": 20,
                                           "low_devanagari": 10, "quality_warning": 22, "too_short": 0}
    splits = report["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 802
    assert json.loads((out / "reports" / "corpus.json").read_text()) == report
    docs = 0
    sentences = 0
    for path in sorted((out / "corpus").iterdir()):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        assert text == "" or text.endswith("\n\n")
        for doc in text.split("\n\n")[:-1]:
            lines = doc.split("\n")
            assert all(line and line == line.strip() for line in lines)
            assert unicodedata.is_normalized("NFC", doc)
            docs += 1
            sentences += len(lines)
    assert docs == 802
    assert sentences == splits["train"]["sentences"] + splits["validation"]["sentences"]
    entries = rejected_entries(out)
    assert len(entries) == 92
    assert all(e["source"].endswith(".jsonl.zst") and isinstance(e["offset"], int) for e in entries)


def test_bad_input_is_counted_kept_and_logged(bad_inputs, tmp_path, caplog):
    folder, complete = bad_inputs
    huge = folder / "huge.jsonl"
    with huge.open("wb") as f:  # a 50 MB line, then a good record
        f.write(b'{"content": "' + b"\xe0\xa4\x95" * (50 * 2**20 // 3) + b'"}\n')
        f.write(record("अंतिम दस्तावेज़ यहाँ है। " + "शब्द " * 40) + b"\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        _, report = run_corpus(["--output_dir", str(out), "--input", f"{folder}/*", "--num_shards", "2",
                                "--read_split_mb", "8"])
    assert report["records_malformed_by_reason"] == {
        "corrupt_stream": 1, "empty_file": 1, "invalid_json": 1, "invalid_utf8": 2, "missing_content": 1,
        "record_too_long": 1}
    dropped = {k: v for k, v in report["documents_dropped"].items() if v}
    assert dropped == {"duplicate": 1, "language": 1, "quality_warning": 1}
    assert report["documents_kept"] == 2 + complete + 1 + 1
    assert report["records_read"] == 8 + (complete + 1) + 2 + 1 + 2
    assert report["records_read"] == (report["records_malformed"] + report["documents_kept"]
                                      + sum(report["documents_dropped"].values()))
    entries = rejected_entries(out)
    got = sorted((e["source"].rsplit("/", 1)[1], e["reason"]) for e in entries)
    assert got == sorted([
        ("good_part_1.jsonl.zst", "invalid_json"), ("good_part_1.jsonl.zst", "missing_content"),
        ("good_part_1.jsonl.zst", "invalid_utf8"), ("good_part_1.jsonl.zst", "duplicate"),
        ("good_part_1.jsonl.zst", "language"), ("good_part_1.jsonl.zst", "quality_warning"),
        ("truncated_part_2.jsonl.gz", "corrupt_stream"), ("legacy.txt", "invalid_utf8"),
        ("empty_part_3.jsonl.zst", "empty_file"), ("huge.jsonl", "record_too_long")])
    too_long = next(e for e in entries if e["reason"] == "record_too_long")
    assert (too_long["offset"], too_long["raw_bytes"], len(too_long["raw"].encode())) == (
        0, 50 * 2**20 // 3 * 3 + 15, 65536)
    logged = caplog.text
    for reason, name in (("empty_file", "empty_part_3.jsonl.zst"), ("corrupt_stream", "truncated_part_2.jsonl.gz"),
                         ("record_too_long", "huge.jsonl")):
        assert reason in logged and name in logged


@pytest.mark.integration
def test_byte_identical_with_one_and_two_workers(bad_inputs, tmp_path):
    folder, _ = bad_inputs
    shutil.copy(stage.DEFAULT_INPUT.replace("*", "hi_meta_part_1"), folder)
    args = ["--input", f"{folder}/*", "--num_shards", "3", "--validation_fraction", "0.2"]
    _, one = run_corpus(["--output_dir", str(tmp_path / "one"), *args])
    _, two = run_corpus(["--output_dir", str(tmp_path / "two"), *args],
                        ("--direct_running_mode=multi_processing", "--direct_num_workers=2"))
    a, b = read_outputs(tmp_path / "one"), read_outputs(tmp_path / "two")
    assert sorted(a) == sorted(b)
    assert len(a) == 3 + 1 + 3
    for name in a:
        assert a[name] == b[name], name
    for key in ("records_read", "records_malformed", "documents_kept", "documents_dropped", "splits"):
        assert one[key] == two[key]


def test_rerun_with_other_shard_count_removes_the_old_shards(tmp_path):
    out = tmp_path / "out"
    run_corpus(["--output_dir", str(out), "--num_shards", "3"])
    _, report = run_corpus(["--output_dir", str(out), "--num_shards", "2"])
    # The next stage reads corpus/train-*: only this run's shards may be there.
    assert sorted(p.name for p in (out / "corpus").iterdir()) == [
        "train-00000-of-00002.txt.gz", "train-00001-of-00002.txt.gz", "validation-00000-of-00001.txt.gz"]
    assert sorted(p.name for p in (out / "rejected").iterdir()) == [
        "rejected-00000-of-00002.jsonl.gz", "rejected-00001-of-00002.jsonl.gz"]
    assert len(report["stale_files_removed"]) == 6  # 3 train + 3 rejected (validation kept its name)
