"""Pieces of the Beam transforms that need no pipeline: spilled documents and the run merge."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from beam_pipelines.pretraining import transforms
from beam_pipelines.pretraining.example_codec import frame_record


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_documents_round_trip_through_the_spill_form(dtype):
    sentences = [[5, 6, 7], [65535 if dtype == np.uint16 else 70000], [8, 9]]
    data = transforms.encode_document([len(s) for s in sentences], [t for s in sentences for t in s], dtype)
    assert transforms.decode_document(data, dtype) == sentences


def test_id_dtype():
    assert transforms.id_dtype(32000) == np.uint16
    assert transforms.id_dtype(70000) == np.uint32


@pytest.mark.parametrize("fan_in, chunk", [(128, 1 << 18), (3, 50)])
def test_merge_runs_yields_every_record_in_key_order(tmp_path, monkeypatch, fan_in, chunk):
    """Many runs (merged in passes when over the fan-in), read in chunks smaller than a record."""
    monkeypatch.setattr(transforms, "MAX_FAN_IN", fan_in)
    monkeypatch.setattr(transforms, "_RUN_CHUNK", chunk)
    rng = random.Random(0)
    runs, expected = [], []
    path = tmp_path / "bucket.bin"
    blob = b"x" * 7  # runs do not start at offset 0
    for _ in range(20):
        entries = sorted(struct.pack(">Q", rng.getrandbits(64)) + frame_record(rng.randbytes(rng.randint(0, 90)))
                         for _ in range(rng.randint(0, 15)))
        run = b"".join(entries)
        if entries:
            runs.append((str(path), len(blob), len(run), len(entries)))
        blob += run
        expected.extend(entries)
    path.write_bytes(blob)
    merged = list(transforms.merge_runs(runs, work_prefix=str(tmp_path / "work")))
    assert merged == sorted(expected)
    assert bool(list(tmp_path.glob("work-merge*"))) == (fan_in < len(runs))


def test_a_truncated_run_is_an_error(tmp_path):
    entry = struct.pack(">Q", 1) + frame_record(b"abc")
    (tmp_path / "r.bin").write_bytes(entry[:-2])
    with pytest.raises(ValueError, match="truncated"):
        list(transforms._iter_run(str(tmp_path / "r.bin"), 0, len(entry), 1))
