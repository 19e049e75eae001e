"""Beam transforms of the corpus stage: thin wrappers around the pure modules.

Element types:

- ``ReadCorpus``: the pipeline root -> ``(records, malformed)``: ``readers.RawRecord`` and
  ``readers.Malformed``.
- ``CleanDocuments``: ``RawRecord`` -> ``(docs, dropped)``: ``(key, (source, offset, text))``
  with ``key`` = ``clean.document_key(text)`` and ``text`` one sentence per line; and
  rejection dicts.
- ``DeduplicateDocuments``: ``(key, (source, offset, text))`` -> ``(unique, duplicates)``:
  ``(key, text)`` and rejection dicts.
- ``WriteCorpus``: ``(key, text)`` -> the paths written, ``corpus/{split}-SSSSS-of-NNNNN.txt.gz``.
- ``WriteRejected``: rejection dicts -> the paths written, ``rejected/rejected-SSSSS-of-NNNNN.jsonl.gz``.

Every count goes to a Beam counter in the ``corpus`` namespace: ``records_read``,
``malformed_<reason>``, ``dropped_<reason>``, ``documents_kept`` and per split
``<split>_documents`` / ``<split>_sentences``.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import io_utils
from beam_pipelines.corpus import clean, filters, readers
from beam_pipelines.corpus.sources import ReadTask, plan_reads

NAMESPACE = "corpus"
REJECTED = "rejected"
_SAMPLE_CHARS = 200

logger = logging.getLogger(__name__)


class _LogOnce:
    """Logs the first rejection of each reason seen by a DoFn instance, with a sample."""

    def _log_once(self, reason: str, source: str, offset: int, sample: str, detail: str = "") -> None:
        seen = self.__dict__.setdefault("_logged_reasons", set())
        if reason in seen:
            return
        seen.add(reason)
        logger.warning("corpus: record rejected (%s) in %s at byte %d%s: %r", reason, source, offset,
                       f" ({detail})" if detail else "", sample[:_SAMPLE_CHARS])


# ---------------------------------------------------------------------------- reading


class _PlanReadsFn(beam.DoFn):
    def __init__(self, input_format: str, split_bytes: int):
        self._input_format = input_format
        self._split_bytes = split_bytes

    def process(self, patterns: Sequence[str]) -> Iterator[ReadTask]:
        tasks = plan_reads(patterns, input_format=self._input_format, split_bytes=self._split_bytes)
        Metrics.counter(NAMESPACE, "input_files").inc(len({t.path for t in tasks}))
        Metrics.counter(NAMESPACE, "input_bytes").inc(sum(t.size for t in tasks if t.start == 0))
        yield from tasks


class _ReadFn(_LogOnce, beam.DoFn):
    MALFORMED = "malformed"

    def __init__(self, max_record_bytes: int):
        self._max = max_record_bytes

    def process(self, task: ReadTask):
        count = 0
        for item in self._read(task):
            count += 1
            yield self._route(item)
        if count == 0 and task.end is None:
            yield self._route(readers.Malformed(task.path, 0, readers.EMPTY_FILE,
                                                f"no record in {task.size} bytes"))

    def _route(self, item):
        Metrics.counter(NAMESPACE, "records_read").inc()
        if isinstance(item, readers.Malformed):
            Metrics.counter(NAMESPACE, f"malformed_{item.reason}").inc()
            self._log_once(item.reason, item.source, item.offset, item.raw, item.detail)
            return beam.pvalue.TaggedOutput(self.MALFORMED, item)
        return item

    def _open(self, path: str):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def _lines(self, stream, start: int = 0):
        return readers.iter_lines(stream, start=start, max_line_bytes=self._max + 1)

    def _read(self, task: ReadTask):
        try:
            raw = self._open(task.path)
        except Exception as e:  # noqa: BLE001 - any I/O error is reported as a record
            yield readers.Malformed(task.path, task.start, readers.UNREADABLE_FILE, f"{type(e).__name__}: {e}")
            return
        with raw:
            if task.fmt == readers.OSCAR2109:
                with self._open(task.meta_path) as meta_raw:
                    text = readers.open_decompressed(raw, readers.compression_of(task.path))
                    meta = readers.open_decompressed(meta_raw, readers.compression_of(task.meta_path))
                    yield from readers.read_2109_records(
                        self._lines(text), self._lines(meta), source=task.path, meta_source=task.meta_path,
                        max_record_bytes=self._max)
                return
            if task.end is None:
                lines = self._lines(readers.open_decompressed(raw, readers.compression_of(task.path)))
                prev_blank = True
            else:
                pos, prev_blank = readers.seek_range_start(raw, task.start)
                lines = self._lines(raw, pos)
            if task.fmt in readers.JSON_FORMATS:
                yield from readers.read_json_records(lines, source=task.path, max_record_bytes=self._max,
                                                     end=task.end)
            else:
                yield from readers.read_text_records(lines, source=task.path, max_record_bytes=self._max,
                                                     end=task.end, prev_blank=prev_blank)


class ReadCorpus(beam.PTransform):
    """Reads OSCAR files: pipeline root -> ``(RawRecord, Malformed)`` PCollections."""

    def __init__(self, patterns: Sequence[str], *, input_format: str, split_bytes: int, max_record_bytes: int):
        super().__init__()
        self._patterns = tuple(patterns)
        self._input_format = input_format
        self._split_bytes = split_bytes
        self._max_record_bytes = max_record_bytes

    def expand(self, pbegin):
        tasks = (
            pbegin
            | "Patterns" >> beam.Create([self._patterns])
            | "PlanReads" >> beam.ParDo(_PlanReadsFn(self._input_format, self._split_bytes))
            # The plan is made by one worker; spread the files and ranges over all of them.
            | "SpreadReadTasks" >> beam.Reshuffle()
        )
        read = tasks | "ReadRecords" >> beam.ParDo(_ReadFn(self._max_record_bytes)).with_outputs(
            _ReadFn.MALFORMED, main="records")
        # A compressed file is read whole by one worker; spread its records before the cleaning.
        records = read.records | "SpreadRecords" >> beam.Reshuffle()
        return records, read[_ReadFn.MALFORMED]


def malformed_rejection(item: readers.Malformed) -> dict:
    """The ``rejected/`` entry of a malformed record."""
    return {"reason": item.reason, "source": item.source, "offset": item.offset, "detail": item.detail,
            "raw": item.raw, "raw_bytes": item.raw_bytes}


# ---------------------------------------------------------------------------- cleaning


class _CleanFn(_LogOnce, beam.DoFn):
    DROPPED = "dropped"

    def __init__(self, settings: filters.FilterSettings):
        self._settings = settings

    def process(self, record: readers.RawRecord):
        reason, sentences = clean.clean_record(record, self._settings)
        if reason:
            Metrics.counter(NAMESPACE, f"dropped_{reason}").inc()
            self._log_once(reason, record.source, record.offset, record.text)
            yield beam.pvalue.TaggedOutput(self.DROPPED, {
                "reason": reason, "source": record.source, "offset": record.offset, "content": record.text,
                "metadata": {"language": record.lang, "language_prob": record.lang_prob,
                             "quality_warnings": list(record.quality_warnings),
                             "harmful_pp": record.harmful_pp, "categories": list(record.categories)},
            })
            return
        text = "\n".join(sentences)
        yield clean.document_key(text), (record.source, record.offset, text)


class CleanDocuments(beam.PTransform):
    """``RawRecord`` -> ``((key, (source, offset, text)), rejection dict)`` PCollections."""

    def __init__(self, settings: filters.FilterSettings):
        super().__init__()
        self._settings = settings

    def expand(self, records):
        out = records | "FilterNormalizeSegment" >> beam.ParDo(_CleanFn(self._settings)).with_outputs(
            _CleanFn.DROPPED, main="docs")
        return out.docs, out[_CleanFn.DROPPED]


# ---------------------------------------------------------------------------- dedup


def _location(doc: tuple[str, int, str]) -> tuple[str, int]:
    return doc[0], doc[1]


class _KeepFirstFn(_LogOnce, beam.DoFn):
    DUPLICATES = "duplicates"

    def process(self, element):
        key, docs = element
        # Two passes over the group instead of sorting it, so that a document repeated a million
        # times is never held in memory; the smallest (source, offset) wins whatever the order.
        source, offset, text = min(docs, key=_location)
        Metrics.counter(NAMESPACE, "documents_kept").inc()
        yield key, text
        for dup_source, dup_offset, _ in docs:
            if (dup_source, dup_offset) == (source, offset):
                continue
            Metrics.counter(NAMESPACE, f"dropped_{filters.DUPLICATE}").inc()
            self._log_once(filters.DUPLICATE, dup_source, dup_offset, text)
            yield beam.pvalue.TaggedOutput(self.DUPLICATES, {
                "reason": filters.DUPLICATE, "source": dup_source, "offset": dup_offset, "content": text,
                "detail": f"same text as {source} at byte {offset}"})


def _keep_all(element):
    Metrics.counter(NAMESPACE, "documents_kept").inc()
    key, (_, _, text) = element
    return key, text


class DeduplicateDocuments(beam.PTransform):
    """``(key, (source, offset, text))`` -> ``((key, text), rejection dict)`` PCollections.

    Documents with the same cleaned text (same key) meet in one group; the copy with the
    smallest ``(source, offset)`` is kept, the others are rejected as ``duplicate``. Only
    one group of identical documents is ever held by a worker.
    """

    def __init__(self, enabled: bool = True):
        super().__init__()
        self._enabled = enabled

    def expand(self, docs):
        if not self._enabled:
            unique = docs | "KeepAll" >> beam.Map(_keep_all)
            none = docs.pipeline | "NoDuplicates" >> beam.Create([])
            return unique, none
        out = (
            docs
            | "GroupByText" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_KeepFirstFn()).with_outputs(_KeepFirstFn.DUPLICATES, main="unique")
        )
        return out.unique, out[_KeepFirstFn.DUPLICATES]


# ---------------------------------------------------------------------------- writing


def shard_name(prefix: str, index: int, count: int, suffix: str) -> str:
    """``prefix-SSSSS-of-NNNNN.suffix``."""
    return f"{prefix}-{index:05d}-of-{count:05d}{suffix}"


class _WriteShardFn(beam.DoFn):
    def __init__(self, paths: dict):
        self._paths = paths

    def process(self, element):
        key, values = element
        items = sorted(v for v in values if v is not None)
        path = self._paths[key]
        with io_utils.atomic_create(path) as f:
            # No file name and mtime 0 in the header: the same content gives the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=4) as gz:
                for _, payload in items:
                    gz.write(zlib.decompress(payload))
        yield path


class WriteSortedShards(beam.PTransform):
    """``((group, shard), (sort_key, zlib-compressed bytes))`` -> the paths written.

    Each shard file is written by one worker, its entries sorted by ``sort_key``, gzip
    compressed without name or time, under a temporary name then renamed. Every shard in
    ``paths`` is written, the empty ones too. The payloads travel zlib-compressed to cut
    the shuffle and the memory of the writer, which holds one shard at a time.
    """

    def __init__(self, paths: dict):
        super().__init__()
        self._paths = dict(paths)

    def expand(self, entries):
        every = (
            entries.pipeline
            | "EveryShard" >> beam.Create(sorted(self._paths))
            | "NoEntry" >> beam.Map(lambda key: (key, None))
        )
        return (
            (entries, every)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self._paths))
        )


def corpus_paths(output_dir: str, *, train_shards: int, validation_shards: int) -> dict:
    """``{(split, shard): path}`` of every corpus file."""
    paths = {}
    for split, count in ((clean.TRAIN, train_shards), (clean.VALIDATION, validation_shards)):
        for i in range(count):
            paths[(split, i)] = io_utils.join(output_dir, "corpus", shard_name(split, i, count, ".txt.gz"))
    return paths


def rejected_paths(output_dir: str, *, num_shards: int) -> dict:
    """``{("rejected", shard): path}`` of every rejected-records file."""
    return {(REJECTED, i): io_utils.join(output_dir, REJECTED, shard_name(REJECTED, i, num_shards, ".jsonl.gz"))
            for i in range(num_shards)}


class _AssignShardFn(beam.DoFn):
    def __init__(self, validation_fraction: float, train_shards: int, validation_shards: int):
        self._fraction = validation_fraction
        self._train = train_shards
        self._validation = validation_shards

    def process(self, element):
        key, text = element
        split, shard = clean.split_and_shard(key, validation_fraction=self._fraction,
                                             train_shards=self._train, validation_shards=self._validation)
        Metrics.counter(NAMESPACE, f"{split}_documents").inc()
        Metrics.counter(NAMESPACE, f"{split}_sentences").inc(text.count("\n") + 1)
        yield (split, shard), (key, zlib.compress((text + "\n\n").encode("utf-8"), 1))


class WriteCorpus(beam.PTransform):
    """``(key, text)`` -> paths of ``corpus/{train,validation}-SSSSS-of-NNNNN.txt.gz``.

    The split and the shard come from the document key (a hash of the text), and a shard
    is sorted by key, so the files do not depend on the runner or the number of workers.
    """

    def __init__(self, output_dir: str, *, validation_fraction: float, train_shards: int, validation_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._fraction = validation_fraction
        self._train = train_shards
        self._validation = validation_shards

    def expand(self, docs):
        paths = corpus_paths(self._output_dir, train_shards=self._train, validation_shards=self._validation)
        return (
            docs
            | "AssignSplitAndShard" >> beam.ParDo(_AssignShardFn(self._fraction, self._train, self._validation))
            | "WriteCorpusShards" >> WriteSortedShards(paths)
        )


def _rejected_entry(rejection: dict, num_shards: int):
    key = clean.record_key(rejection["source"], rejection["offset"])
    shard = int.from_bytes(key[:8], "big") % num_shards
    line = json.dumps(rejection, ensure_ascii=False, sort_keys=True) + "\n"
    sort_key = (rejection["source"], rejection["offset"], rejection["reason"])
    return (REJECTED, shard), (sort_key, zlib.compress(line.encode("utf-8"), 1))


class WriteRejected(beam.PTransform):
    """Rejection dicts -> paths of ``rejected/rejected-SSSSS-of-NNNNN.jsonl.gz``.

    One JSON object per line, sorted by source file and byte offset within a shard; the
    shard is a hash of the record's location.
    """

    def __init__(self, output_dir: str, *, num_shards: int):
        super().__init__()
        self._output_dir = output_dir
        self._num_shards = num_shards

    def expand(self, rejections):
        return (
            rejections
            | "KeyByLocation" >> beam.Map(_rejected_entry, self._num_shards)
            | "WriteRejectedShards" >> WriteSortedShards(rejected_paths(self._output_dir, num_shards=self._num_shards))
        )
