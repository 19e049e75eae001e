"""Fixtures of the corpus stage's tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

from tests.corpus.helpers import hindi_doc, record, zlib_complete_lines


@pytest.fixture
def bad_inputs(tmp_path) -> tuple[Path, int]:
    """A folder of small input files with every kind of bad record; returns it and the number of
    complete records in the truncated gzip file."""
    d = tmp_path / "in"
    d.mkdir()
    lines = [record(hindi_doc(1)), b"{not json", record(hindi_doc(2)), b'{"metadata": {}}',
             record(hindi_doc(1)), record("This is an English page about something else entirely.", lang="en"),
             record("छोटा", warnings=["tiny"]), b'{"content": "\xff\xfe \xe0\xa4"}']
    (d / "good_part_1.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    gz_records = b"".join(record(hindi_doc(100 + i)) + b"\n" for i in range(300))
    packed = gzip.compress(gz_records)
    cut = packed[: len(packed) // 2]
    complete = zlib_complete_lines(cut)
    (d / "truncated_part_2.jsonl.gz").write_bytes(cut)
    (d / "legacy.txt").write_bytes((hindi_doc(3) + "\n\n").encode() + "टूटा ".encode() + b"\xff" + " दस्तावेज़\n".encode())
    (d / "empty_part_3.jsonl.zst").write_bytes(b"")
    return d, complete
