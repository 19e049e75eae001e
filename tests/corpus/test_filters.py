"""Filters: each reason, on plain values."""

from __future__ import annotations

import pytest

from beam_pipelines.corpus import filters
from beam_pipelines.corpus.clean import clean_record, document_key, split_and_shard
from beam_pipelines.corpus.readers import RawRecord

S = filters.FilterSettings(
    language="hi", min_language_prob=0.8, drop_quality_warnings=frozenset({"tiny", "noisy"}),
    min_harmful_pp=40.0, drop_categories=frozenset({"adult"}), min_document_chars=10, min_devanagari_share=0.5,
)
HINDI = "यह एक साधारण हिन्दी वाक्य है। दूसरा वाक्य भी है।"

LANGUAGE_CASES = [
    ("hindi_confident", "hi", 0.95, None),
    ("hindi_at_threshold", "hi", 0.8, None),
    ("hindi_uncertain", "hi", 0.79, filters.LANGUAGE),
    ("english", "en", 0.99, filters.LANGUAGE),
    ("missing_label", "", 0.99, filters.LANGUAGE),
    ("missing_prob", "hi", None, filters.LANGUAGE),
    ("format_without_language", None, None, None),
]


@pytest.mark.parametrize("name,label,prob,expected", LANGUAGE_CASES, ids=[c[0] for c in LANGUAGE_CASES])
def test_language(name, label, prob, expected):
    assert filters.language_reason(label, prob, S) == expected


METADATA_CASES = [
    ("clean", (), 500.0, (), None),
    ("kept_warning", ("header", "footer"), 500.0, (), None),
    ("tiny", ("tiny",), 500.0, (), filters.QUALITY_WARNING),
    ("noisy_among_others", ("header", "noisy"), 500.0, (), filters.QUALITY_WARNING),
    ("harmful", (), 12.5, (), filters.HARMFUL),
    ("harmful_at_threshold_kept", (), 40.0, (), None),
    ("no_harmful_score", (), None, (), None),
    ("adult_category", (), 500.0, ("adult",), filters.CATEGORY),
    ("other_category", (), 500.0, ("news",), None),
    ("warning_checked_before_harmful", ("tiny",), 1.0, ("adult",), filters.QUALITY_WARNING),
]


@pytest.mark.parametrize("name,warnings,pp,categories,expected", METADATA_CASES, ids=[c[0] for c in METADATA_CASES])
def test_metadata(name, warnings, pp, categories, expected):
    assert filters.metadata_reason(quality_warnings=warnings, harmful_pp=pp, categories=categories,
                                   settings=S) == expected


def test_harmful_filter_disabled():
    settings = filters.FilterSettings(min_harmful_pp=None)
    assert filters.metadata_reason(quality_warnings=(), harmful_pp=0.1, categories=(), settings=settings) is None


DEVANAGARI_CASES = [
    ("all_devanagari", "हिन्दी भाषा", 1.0),  # vowel signs and virama are marks, not letters
    ("half", "कख ab", 0.5),
    ("digits_and_punctuation_ignored", "क 123 ।!? १२३", 1.0),
    ("latin_only", "hello world", 0.0),
    ("no_letters", "123 ...", 0.0),
]


@pytest.mark.parametrize("name,text,expected", DEVANAGARI_CASES, ids=[c[0] for c in DEVANAGARI_CASES])
def test_devanagari_share(name, text, expected):
    assert filters.devanagari_share(text) == pytest.approx(expected)


CONTENT_CASES = [
    ("ok", [HINDI], None),
    ("short", ["छोटा"], filters.TOO_SHORT),  # 4 characters < 10
    ("spaces_do_not_count", ["क ख ग घ ङ च छ ज झ"], filters.TOO_SHORT),  # 9 characters without spaces
    ("exactly_min", ["कखगघङचछजझञ"], None),
    ("empty", [], filters.TOO_SHORT),
    ("latin_heavy", ["Live score IND 342/3 vs AUS 296/3 match centre यह है"], filters.LOW_DEVANAGARI),
]


@pytest.mark.parametrize("name,lines,expected", CONTENT_CASES, ids=[c[0] for c in CONTENT_CASES])
def test_content(name, lines, expected):
    assert filters.content_reason(lines, S) == expected


def test_clean_record_normalizes_and_segments():
    record = RawRecord("f", 0, "  यह एक साधारण हिन्दी वाक्य है। दूसरा\tवाक्य भी है।\n\n\x00तीसरी पंक्ति", "hi", 0.9)
    assert clean_record(record, S) == (None, ["यह एक साधारण हिन्दी वाक्य है।", "दूसरा वाक्य भी है।", "तीसरी पंक्ति"])


def test_clean_record_metadata_filters_first():
    record = RawRecord("f", 0, HINDI, "en", 0.99, ("tiny",))
    assert clean_record(record, S) == (filters.LANGUAGE, [])


def test_split_and_shard_is_stable_and_respects_fraction():
    key = document_key("एक दस्तावेज़")
    assert key.hex() == document_key("एक दस्तावेज़").hex()
    assert len(key) == 16
    keys = [document_key(f"दस्तावेज़ {i}") for i in range(20000)]
    splits = [split_and_shard(k, validation_fraction=0.1, train_shards=4, validation_shards=2) for k in keys]
    share = sum(s == "validation" for s, _ in splits) / len(splits)
    assert share == pytest.approx(0.1, abs=0.01)  # binomial sd is 0.002
    assert {sh for s, sh in splits if s == "train"} == {0, 1, 2, 3}
    assert {sh for s, sh in splits if s == "validation"} == {0, 1}
    assert all(s == "train" for s, _ in (split_and_shard(k, validation_fraction=0.0, train_shards=1,
                                                           validation_shards=1) for k in keys))
