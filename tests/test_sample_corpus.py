"""The sample corpus bundled in beam_pipelines/sample_data: OSCAR 23.01 layout, manifest, determinism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import zstandard

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "beam_pipelines" / "sample_data"
PARTS = ("hi_meta_part_1.jsonl.zst", "hi_meta_part_2.jsonl.zst")
METADATA_KEYS = {"identification", "harmful_pp", "tlsh", "quality_warnings", "categories",
                 "sentence_identifications"}
WARC_KEYS = {"warc-type", "content-length", "warc-record-id", "warc-date", "warc-target-uri",
             "warc-block-digest", "content-type", "warc-identified-content-language", "warc-refers-to"}
WARNINGS = {"tiny", "short_sentences", "header", "footer", "noisy", "adult"}


def _records(name: str) -> list[dict]:
    data = zstandard.ZstdDecompressor().stream_reader((SAMPLE_DIR / name).open("rb")).read()
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "", f"{name} does not end with a newline"
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict]]:
    return {name: _records(name) for name in PARTS}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((SAMPLE_DIR / "manifest.json").read_text(encoding="utf-8"))


def _kinds(records: dict[str, list[dict]], manifest: dict) -> dict[str, str]:
    """warc-record-id -> planted kind (unlisted ids are clean Hindi)."""
    kind_of = {rid: kind for kind, ids in manifest["record_ids"].items() for rid in ids}
    return {r["warc_headers"]["warc-record-id"]: kind_of.get(r["warc_headers"]["warc-record-id"], "hindi")
            for part in records.values() for r in part}


def _devanagari_share(text: str) -> float:
    letters = [c for c in text if c.isalpha() or "\u0900" <= c <= "\u097f"]
    return sum(1 for c in letters if "\u0900" <= c <= "\u097f") / max(1, len(letters))


def test_every_record_has_the_oscar_2301_layout(records):
    for name, part in records.items():
        assert part, name
        for i, r in enumerate(part):
            where = f"{name} record {i}"
            assert list(r) == ["content", "warc_headers", "metadata"], where
            meta = r["metadata"]
            assert set(meta) == METADATA_KEYS, where
            assert set(r["warc_headers"]) == WARC_KEYS, where
            assert all(isinstance(v, str) for v in r["warc_headers"].values()), where
            assert set(meta["identification"]) == {"label", "prob"}, where
            assert 0.0 < meta["identification"]["prob"] <= 1.0, where
            assert isinstance(meta["harmful_pp"], float) and meta["harmful_pp"] > 0, where
            assert re.fullmatch(r"tlsh:T1[0-9A-F]{138}", meta["tlsh"]), where
            assert meta["quality_warnings"] is None or set(meta["quality_warnings"]) <= WARNINGS, where
            assert meta["categories"] is None or all(isinstance(c, str) for c in meta["categories"]), where
            sids = meta["sentence_identifications"]
            assert len(sids) == len(r["content"].split("\n")), where
            # Real OSCAR line probabilities can exceed 1 by a rounding error (one here is 1.00008).
            for s in sids:
                assert s is None or (set(s) == {"label", "prob"} and 0.0 < s["prob"] <= 1.001), where


def test_record_ids_are_unique(records):
    ids = [r["warc_headers"]["warc-record-id"] for part in records.values() for r in part]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", i) for i in ids)


def test_manifest_counts_match_the_files(records, manifest):
    kinds = _kinds(records, manifest)
    assert dict(Counter(kinds.values())) == manifest["kinds"]
    assert sum(manifest["kinds"].values()) == manifest["records"] == 894
    for name, part in records.items():
        assert manifest["files"][name]["records"] == len(part)
    all_records = [r for part in records.values() for r in part]
    labels = Counter(r["metadata"]["identification"]["label"] for r in all_records)
    assert dict(labels) == manifest["identification_labels"]
    warnings = Counter(w for r in all_records for w in r["metadata"]["quality_warnings"] or [])
    assert dict(warnings) == manifest["quality_warnings"]


def test_planted_kinds_have_their_properties(records, manifest):
    kinds = _kinds(records, manifest)
    expected = {"hindi": 762, "short_sentences": 20, "header_footer": 20, "duplicate": 30, "non_hindi": 12,
                "low_prob": 8, "tiny": 16, "noisy": 6, "harmful": 10, "latin_heavy": 10}
    assert manifest["kinds"] == dict(sorted(expected.items()))
    for part in records.values():
        for r in part:
            kind, meta, text = kinds[r["warc_headers"]["warc-record-id"]], r["metadata"], r["content"]
            label, prob = meta["identification"]["label"], meta["identification"]["prob"]
            if kind == "non_hindi":
                assert label != "hi"
                continue
            assert label == "hi"
            if kind in ("hindi", "duplicate", "harmful", "short_sentences", "header_footer"):
                assert prob >= 0.9 and len(text) >= 300 and _devanagari_share(text) >= 0.85
            assert (meta["harmful_pp"] <= 25) == (kind == "harmful")
            assert (prob < 0.75) == (kind == "low_prob")
            assert (_devanagari_share(text) < 0.5) == (kind in ("latin_heavy", "low_prob"))
            if kind == "tiny":
                assert len(text) < 100 and meta["quality_warnings"] == ["tiny"]


def test_exact_duplicates_span_both_files(records, manifest):
    where: dict[str, list[tuple[str, str]]] = {}
    for name, part in records.items():
        for r in part:
            where.setdefault(r["content"], []).append((name, r["warc_headers"]["warc-record-id"]))
    groups = [v for v in where.values() if len(v) > 1]
    assert len(groups) == manifest["duplicate_groups"] == 24
    assert sum(len(g) - 1 for g in groups) == manifest["kinds"]["duplicate"] == 30
    assert sum(1 for g in groups if len({n for n, _ in g}) == 2) == manifest["duplicate_groups_across_parts"]
    assert manifest["duplicate_groups_across_parts"] >= 1
    assert sorted(sorted(i for _, i in g) for g in groups) == manifest["duplicate_group_ids"]


def test_readme_table_matches_the_manifest(manifest):
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", readme, flags=re.M))
    assert {k: int(v) for k, v in table.items()} == manifest["kinds"]


def test_generator_is_deterministic(shared_corpus, tmp_path, repo_root):
    script = repo_root / "scripts" / "make_sample_corpus.py"
    cmd = [sys.executable, str(script), "--shared_corpus", str(shared_corpus), "--output_dir", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for name in (*PARTS, "manifest.json", "README.md"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
