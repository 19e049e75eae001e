"""Beam transforms on the DirectRunner: counting, capping, deterministic word-count shards."""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.vocab import learn, tokenizer_spec, transforms
from tests.vocab.conftest import synthetic_documents

LINES = [
    "यह एक वाक्य है। यह दूसरा वाक्य है!",
    "",
    "Hello, world! hello\tworld",
    "क्\u200dष और \u0958 (nukta) 中文",
    "यह",
]


def _python_counts(lines: list[str]) -> Counter[str]:
    splitter = tokenizer_spec.WordSplitter()
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(splitter.split(line))
    return counts


def test_count_words_equals_plain_python_count():
    lines = LINES + [line for doc in synthetic_documents(40) for line in doc]
    expected = _python_counts(lines)
    assert expected["यह"] > 3 and expected["\u0915\u093c"] == 1
    with BeamTestPipeline() as p:
        counts = p | beam.Create(lines) | transforms.CountWords(min_count=1)
        assert_that(counts, equal_to(sorted(expected.items())))


def test_count_words_with_tiny_bundle_flushes():
    lines = [line for doc in synthetic_documents(30) for line in doc]
    expected = _python_counts(lines)
    with BeamTestPipeline() as p:
        counts = p | beam.Create(lines) | transforms.CountWords(min_count=1, max_distinct_per_bundle=3)
        assert_that(counts, equal_to(sorted(expected.items())))


def test_min_count_drops_rare_words_and_counts_them():
    expected = {w: c for w, c in _python_counts(LINES).items() if c >= 2}
    assert expected == {"यह": 3, "वाक्य": 2, "है": 2, "world": 2, "!": 2}
    p = BeamTestPipeline()
    counts = p | beam.Create(LINES) | transforms.CountWords(min_count=2)
    assert_that(counts, equal_to(sorted(expected.items())))
    result = p.run()
    result.wait_until_finish()
    metrics = {m.key.metric.name: m.committed for m in result.metrics().query()["counters"]}
    assert metrics["lines"] == len(LINES) - 1
    assert metrics["word_occurrences"] == sum(_python_counts(LINES).values())
    assert metrics["distinct_words"] == len(_python_counts(LINES))
    assert metrics["distinct_words_kept"] == 5
    assert metrics["word_occurrences_kept"] == 11


def test_learn_vocabulary_keeps_the_most_frequent_words():
    counts = sorted(_python_counts([line for doc in synthetic_documents() for line in doc]).items())
    with BeamTestPipeline() as p:
        learned = (
            p
            | beam.Create(counts)
            | transforms.LearnVocabulary(vocab_size=90, max_words=30)
            | beam.Map(lambda v: (len(v.tokens), v.words, v.word_occurrences))
        )
        top = sorted(counts, key=lambda wc: (-wc[1], wc[0]))[:30]
        assert_that(learned, equal_to([(90, 30, sum(c for _, c in top))]))


def test_word_rank_breaks_ties_by_word():
    top = sorted([("b", 2), ("a", 2), ("c", 5), ("d", 1)], key=transforms.word_rank, reverse=True)[:3]
    assert top == [("c", 5), ("b", 2), ("a", 2)]


def test_word_count_shards_are_sorted_and_complete(tmp_path):
    counts = [("क", 5), ("ख", 7), ("ग", 5), ("a", 1)]
    with BeamTestPipeline() as p:
        _ = p | beam.Create(counts) | transforms.WriteWordCounts(str(tmp_path), 8)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == [transforms.shard_name(i, 8) for i in range(8)]
    rows = []
    for name in names:
        text = (tmp_path / name).read_text(encoding="utf-8")
        shard_rows = [tuple(line.split("\t")) for line in text.splitlines()]
        assert shard_rows == sorted(shard_rows, key=lambda r: (-int(r[1]), r[0]))
        rows += [(w, int(c)) for w, c in shard_rows]
        assert all(transforms.shard_of(w, 8) == names.index(name) for w, _ in shard_rows)
    assert sorted(rows) == sorted(counts)


def test_count_words_with_alphabet_counts_every_word():
    lines = [line for doc in synthetic_documents(20) for line in doc] + ["ॐ ज़ूम"]
    expected_words = {w: c for w, c in _python_counts(lines).items() if c >= 2}
    expected_alphabet = learn.count_alphabet(_python_counts(lines).items())
    assert expected_alphabet["ॐ"] == 1
    with BeamTestPipeline() as p:
        words, alphabet = p | beam.Create(lines) | transforms.CountWords(min_count=2, with_alphabet=True)
        assert_that(words, equal_to(sorted(expected_words.items())), label="words")
        assert_that(alphabet, equal_to(sorted(expected_alphabet.items())), label="alphabet")
