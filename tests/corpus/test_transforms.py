"""Beam transforms of the corpus stage, on a handful of literal elements."""

from __future__ import annotations

import gzip

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.corpus import filters, transforms
from beam_pipelines.corpus.clean import document_key
from beam_pipelines.corpus.readers import RawRecord

SETTINGS = filters.FilterSettings(min_language_prob=0.8, drop_quality_warnings=frozenset({"tiny"}),
                                  min_document_chars=5, min_devanagari_share=0.5)
HINDI = "नमस्ते दुनिया। यह दूसरा वाक्य है।"


def test_clean_documents_routes_kept_and_dropped():
    records = [
        RawRecord("a", 0, HINDI, "hi", 0.99),
        RawRecord("a", 10, HINDI, "en", 0.99),
        RawRecord("a", 20, HINDI, "hi", 0.99, ("tiny",)),
        RawRecord("b", 0, "ठीक", "hi", 0.99),
        RawRecord("b", 5, "mostly latin text here क", None, None),
    ]
    text = "नमस्ते दुनिया।\nयह दूसरा वाक्य है।"
    with test_pipeline.TestPipeline() as p:
        docs, dropped = p | beam.Create(records) | transforms.CleanDocuments(SETTINGS)
        assert_that(docs, equal_to([(document_key(text), ("a", 0, text))]), label="docs")
        assert_that(dropped | beam.Map(lambda d: (d["source"], d["offset"], d["reason"])),
                    equal_to([("a", 10, "language"), ("a", 20, "quality_warning"), ("b", 0, "too_short"),
                              ("b", 5, "low_devanagari")]), label="dropped")


def test_deduplicate_keeps_smallest_location():
    key = document_key("x")
    docs = [(key, ("b.jsonl.zst", 5, "x")), (key, ("a.jsonl.zst", 900, "x")), (key, ("a.jsonl.zst", 30, "x")),
            (document_key("y"), ("c", 0, "y"))]
    with test_pipeline.TestPipeline() as p:
        unique, dups = p | beam.Create(docs) | transforms.DeduplicateDocuments()
        assert_that(unique, equal_to([(key, "x"), (document_key("y"), "y")]), label="unique")
        assert_that(dups | beam.Map(lambda d: (d["source"], d["offset"], d["reason"], d["detail"])),
                    equal_to([("a.jsonl.zst", 900, "duplicate", "same text as a.jsonl.zst at byte 30"),
                              ("b.jsonl.zst", 5, "duplicate", "same text as a.jsonl.zst at byte 30")]), label="dups")


def test_deduplicate_disabled_keeps_all():
    key = document_key("x")
    with test_pipeline.TestPipeline() as p:
        unique, dups = p | beam.Create([(key, ("a", 0, "x")), (key, ("b", 0, "x"))]) | \
            transforms.DeduplicateDocuments(enabled=False)
        assert_that(unique, equal_to([(key, "x"), (key, "x")]), label="unique")
        assert_that(dups, equal_to([]), label="dups")


def test_write_corpus_sorted_reproducible_gzip_and_empty_shards(tmp_path):
    texts = [f"वाक्य {i}।\nदूसरा {i}।" for i in range(30)]
    with test_pipeline.TestPipeline() as p:
        written = (p | beam.Create([(document_key(t), t) for t in texts])
                   | transforms.WriteCorpus(str(tmp_path), validation_fraction=0.0, train_shards=3,
                                            validation_shards=1))
        assert_that(written | beam.Map(lambda path: path.rsplit("/", 1)[1]),
                    equal_to(["train-00000-of-00003.txt.gz", "train-00001-of-00003.txt.gz",
                              "train-00002-of-00003.txt.gz", "validation-00000-of-00001.txt.gz"]))
    files = sorted((tmp_path / "corpus").iterdir())
    assert [f.name for f in files] == ["train-00000-of-00003.txt.gz", "train-00001-of-00003.txt.gz",
                                       "train-00002-of-00003.txt.gz", "validation-00000-of-00001.txt.gz"]
    seen = []
    for f in files:
        raw = f.read_bytes()
        assert raw[3] == 0, "no FNAME flag in the gzip header"
        assert raw[4:8] == b"\0\0\0\0", "mtime 0"
        content = gzip.decompress(raw).decode()
        docs = [d for d in content.split("\n\n") if d]
        assert content == "".join(d + "\n\n" for d in docs)
        assert [document_key(d) for d in docs] == sorted(document_key(d) for d in docs)
        seen += docs
    assert sorted(seen) == sorted(texts)
    assert gzip.decompress(files[-1].read_bytes()) == b""


def test_write_rejected_jsonl(tmp_path):
    rejections = [{"reason": "language", "source": "s", "offset": i, "content": f"text {i}"} for i in range(5)]
    with test_pipeline.TestPipeline() as p:
        _ = p | beam.Create(rejections) | transforms.WriteRejected(str(tmp_path), num_shards=1)
    lines = gzip.decompress((tmp_path / "rejected" / "rejected-00000-of-00001.jsonl.gz").read_bytes()).decode()
    assert lines.splitlines()[0] == '{"content": "text 0", "offset": 0, "reason": "language", "source": "s"}'
    assert len(lines.splitlines()) == 5
