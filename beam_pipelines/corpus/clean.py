"""One record in, one cleaned document or one drop reason out; split and shard by hash.

Pure Python: the Beam transforms call these per element.
"""

from __future__ import annotations

import hashlib

from beam_pipelines.corpus import filters
from beam_pipelines.corpus.normalize import normalize_document
from beam_pipelines.corpus.readers import RawRecord
from beam_pipelines.corpus.segment import split_sentences

TRAIN = "train"
VALIDATION = "validation"


def clean_record(record: RawRecord, settings: filters.FilterSettings) -> tuple[str | None, list[str]]:
    """Filters, normalizes and segments one document.

    The cheap metadata filters run first (language, quality warnings, harmful content,
    categories), then normalization, then the length and Devanagari filters, then
    sentence segmentation.

    Returns:
        ``(reason, [])`` for a dropped document, ``(None, sentences)`` for a kept one.
    """
    reason = filters.language_reason(record.lang, record.lang_prob, settings) or filters.metadata_reason(
        quality_warnings=record.quality_warnings,
        harmful_pp=record.harmful_pp,
        categories=record.categories,
        settings=settings,
    )
    if reason:
        return reason, []
    lines = normalize_document(record.text)
    reason = filters.content_reason(lines, settings)
    if reason:
        return reason, []
    return None, split_sentences(lines)


def document_key(text: str) -> bytes:
    """A 16-byte stable hash of a cleaned document's text: its identity for dedup and sharding."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def split_and_shard(
    key: bytes, *, validation_fraction: float, train_shards: int, validation_shards: int
) -> tuple[str, int]:
    """Assigns a document to a split and a shard from its ``document_key``.

    The first 8 bytes, read as a fraction of 2**64, decide the split (validation when under
    ``validation_fraction``); the last 8 bytes modulo the split's shard count give the shard.
    """
    if int.from_bytes(key[:8], "big") < validation_fraction * 2.0**64:
        return VALIDATION, int.from_bytes(key[8:16], "big") % validation_shards
    return TRAIN, int.from_bytes(key[8:16], "big") % train_shards


def record_key(source: str, offset: int) -> bytes:
    """A stable hash of a record's location, to shard ``rejected/``."""
    return hashlib.blake2b(f"{source}\0{offset}".encode(), digest_size=16).digest()
