"""Read planning (formats, 21.09 pairs, byte ranges) and reading through the pipeline."""

from __future__ import annotations

import gzip
import json

import pytest

from beam_pipelines.corpus import readers as R
from beam_pipelines.corpus.sources import ReadTask, plan_reads
from tests.corpus.helpers import hindi_doc, record, rejected_entries, run_corpus


def _meta(nb: int) -> bytes:
    return json.dumps({"headers": {"warc-identified-content-language": "hin"}, "offset": 0,
                       "nb_sentences": nb}).encode() + b"\n"


@pytest.fixture
def mixed(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    docs = [hindi_doc(i) for i in range(3)]
    (d / "hi_part_1.txt.gz").write_bytes(gzip.compress("\n\n".join(docs).encode() + b"\n"))
    (d / "hi_meta_part_1.jsonl.gz").write_bytes(gzip.compress(b"".join(_meta(d.count("\n") + 1) for d in docs)))
    (d / "hi_meta_part_9.jsonl.gz").write_bytes(gzip.compress(record(hindi_doc(9)) + b"\n"))
    (d / "data.jsonl").write_bytes(b"".join(record(hindi_doc(20 + i)) + b"\n" for i in range(6)))
    (d / "old.txt").write_bytes("\n\n".join(hindi_doc(40 + i) for i in range(5)).encode() + b"\n")
    return d


def test_plan_pairs_2109_and_cuts_uncompressed_files(mixed):
    d = str(mixed)
    size = (mixed / "data.jsonl").stat().st_size
    tasks = plan_reads([f"{d}/*"], input_format=R.AUTO, split_bytes=1000)
    by_file = {}
    for t in tasks:
        by_file.setdefault(t.path.rsplit("/", 1)[1], []).append(t)
    assert sorted(by_file) == ["data.jsonl", "hi_meta_part_9.jsonl.gz", "hi_part_1.txt.gz", "old.txt"]
    assert by_file["hi_part_1.txt.gz"] == [ReadTask(f"{d}/hi_part_1.txt.gz", R.OSCAR2109, 0, None,
                                                    (mixed / "hi_part_1.txt.gz").stat().st_size,
                                                    f"{d}/hi_meta_part_1.jsonl.gz")]
    assert by_file["hi_meta_part_9.jsonl.gz"][0].fmt == R.OSCAR2201
    ranges = [(t.start, t.end) for t in by_file["data.jsonl"]]
    assert ranges[0] == (0, 1000) and ranges[-1][1] == size and len(ranges) == -(-size // 1000)
    assert {t.fmt for t in by_file["old.txt"]} == {R.OSCAR2019}


def test_plan_meta_pattern_brings_its_text_file(mixed):
    tasks = plan_reads([f"{mixed}/hi_meta_part_1.jsonl.gz"], input_format=R.AUTO, split_bytes=1 << 20)
    assert [(t.path.rsplit("/", 1)[1], t.fmt) for t in tasks] == [("hi_part_1.txt.gz", R.OSCAR2109)]


def test_plan_explicit_2109_needs_metadata(mixed):
    with pytest.raises(FileNotFoundError, match="old.txt"):
        plan_reads([f"{mixed}/old.txt"], input_format=R.OSCAR2109, split_bytes=1 << 20)


def test_plan_explicit_format_overrides_name(tmp_path):
    (tmp_path / "dump.json").write_bytes(record("x") + b"\n")
    [task] = plan_reads([f"{tmp_path}/dump.json"], input_format=R.OSCAR2301, split_bytes=1 << 20)
    assert (task.fmt, task.end) == (R.OSCAR2301, None)


def test_pipeline_reads_every_format_and_range_once(mixed, tmp_path):
    out = tmp_path / "out"
    _, report = run_corpus(["--output_dir", str(out), "--input", f"{mixed}/*", "--read_split_mb", "0.0005",
                            "--num_shards", "1"])
    assert report["records_read"] == 3 + 1 + 6 + 5
    assert report["documents_kept"] == 15
    assert report["records_malformed"] == 0
    assert rejected_entries(out) == []
