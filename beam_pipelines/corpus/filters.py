"""Document filters (pure Python). Each returns the reason a document is dropped, or None.

The reasons are the keys of ``documents_dropped`` in ``reports/corpus.json``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

LANGUAGE = "language"
QUALITY_WARNING = "quality_warning"
HARMFUL = "harmful_pp"
CATEGORY = "category"
TOO_SHORT = "too_short"
LOW_DEVANAGARI = "low_devanagari"
DUPLICATE = "duplicate"

DROP_REASONS = (LANGUAGE, QUALITY_WARNING, HARMFUL, CATEGORY, TOO_SHORT, LOW_DEVANAGARI, DUPLICATE)

_NOT_LETTER = re.compile(r"[\W\d_]+")
_NOT_DEVANAGARI = re.compile(r"[^\u0900-\u097F\uA8E0-\uA8FF]+")


@dataclass(frozen=True)
class FilterSettings:
    """Thresholds of the filters (built from ``CorpusConfig``).

    Attributes:
        language: the OSCAR language label to keep (``hi``).
        min_language_prob: minimum OSCAR identification probability.
        drop_quality_warnings: OSCAR quality warnings (``annotation`` in 22.01) that drop a document.
        min_harmful_pp: documents with ``harmful_pp`` below this are dropped; None disables.
        drop_categories: UT1 blocklist categories that drop a document.
        min_document_chars: minimum non-whitespace characters after normalization.
        min_devanagari_share: minimum share of Devanagari among the letters.
    """

    language: str = "hi"
    min_language_prob: float = 0.7
    drop_quality_warnings: frozenset[str] = frozenset()
    min_harmful_pp: float | None = None
    drop_categories: frozenset[str] = frozenset()
    min_document_chars: int = 0
    min_devanagari_share: float = 0.0


def language_reason(label: str | None, prob: float | None, settings: FilterSettings) -> str | None:
    """Drops a document whose OSCAR language is not ``settings.language`` or is too uncertain.

    ``label`` None means the format carries no per-document language (OSCAR 2019 and 21.09
    files are per language already): the filter does not apply.
    """
    if label is None:
        return None
    if label != settings.language or prob is None or prob < settings.min_language_prob:
        return LANGUAGE
    return None


def metadata_reason(
    *,
    quality_warnings: Collection[str],
    harmful_pp: float | None,
    categories: Collection[str],
    settings: FilterSettings,
) -> str | None:
    """Drops a document by its OSCAR quality warnings, harmful-content perplexity or categories.

    A low ``harmful_pp`` (perplexity under a model of harmful text) means likely harmful.
    A document without ``harmful_pp`` passes that filter.
    """
    if settings.drop_quality_warnings and any(w in settings.drop_quality_warnings for w in quality_warnings):
        return QUALITY_WARNING
    if settings.min_harmful_pp is not None and harmful_pp is not None and harmful_pp < settings.min_harmful_pp:
        return HARMFUL
    if settings.drop_categories and any(c in settings.drop_categories for c in categories):
        return CATEGORY
    return None


def devanagari_share(text: str) -> float:
    """The share of Devanagari characters among the letters of ``text`` (0.0 without letters).

    Letters are the characters Python's ``re`` counts as word characters minus digits and
    ``_`` (Unicode categories L*, which leaves out vowel signs and other marks).
    """
    letters = _NOT_LETTER.sub("", text)
    if not letters:
        return 0.0
    return len(_NOT_DEVANAGARI.sub("", letters)) / len(letters)


def non_space_chars(lines: list[str]) -> int:
    """Counts the characters of normalized lines, not counting spaces."""
    return sum(len(line) - line.count(" ") for line in lines)


def content_reason(lines: list[str], settings: FilterSettings) -> str | None:
    """Drops a normalized document that is too short or has too little Devanagari."""
    if non_space_chars(lines) < max(1, settings.min_document_chars):
        return TOO_SHORT
    if settings.min_devanagari_share > 0 and devanagari_share("".join(lines)) < settings.min_devanagari_share:
        return LOW_DEVANAGARI
    return None
