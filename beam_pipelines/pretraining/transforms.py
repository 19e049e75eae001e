"""Beam transforms of the pretraining stage: ``CreatePretrainingExamples`` and ``WriteExamples``.

Data flow (each element is small: Beam's per-element cost and the runner's buffers are
what to design around)::

    (split, corpus file) ──ReadAndTokenize──► token ids spilled to one file per corpus file,
                                             and (split, doc_key, file, offset, length) per document
        ──AssignBuckets (document count per split as side input)──► ((split, bucket), reference)
        ──GroupByKey──► the references of one bucket
        ──BucketInstances──► one spill file per bucket, records grouped by output shard and
                              sorted by a random key; (split, shard) -> (file, offset, length, count)
        ──GroupByKey──► the references of one output shard
        ──WriteShard──► a streaming merge of the sorted runs into SPLIT-SSSSS-of-NNNNN.tfrecord[.gz]

Token ids and records never go through a shuffle, and no step holds more than one
bucket, or one read buffer per sorted run, so memory stays flat in the size of the
input. Every random choice is seeded from (seed, split, bucket, dupe pass), and a
bucket's documents are sorted by their hash first, so output bytes do not depend on
the runner or the number of workers.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import heapq
import io
import logging
import pickle
import random
import struct
import uuid
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from beam_pipelines import io_utils
from beam_pipelines.pretraining.example_codec import ExampleEncoder, frame_record
from beam_pipelines.pretraining.instances import create_instances_from_document, create_packed_instances
from beam_pipelines.pretraining.report import SplitStats
from beam_pipelines.pretraining.vocab_info import VocabInfo, parse_vocab

SPLITS = ("train", "validation")
_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}
_NAMESPACE = "pretraining"
_KEY = struct.Struct(">Q")

logger = logging.getLogger(__name__)


def mix(*values: int) -> int:
    """A stable 64-bit hash of integers (the seed of every random choice)."""
    data = b"".join(v.to_bytes(8, "little", signed=True) for v in values)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def document_key(lines: list[str]) -> int:
    """A stable 63-bit hash of a document's text."""
    digest = hashlib.blake2b("\n".join(lines).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def shard_name(split: str, shard: int, num_shards: int, *, gzip_output: bool) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord" + (".gz" if gzip_output else "")


def load_vocab(vocab_path: str, tokenizer_path: str) -> VocabInfo:
    return parse_vocab(io_utils.read_text(vocab_path), io_utils.read_text(tokenizer_path),
                       vocab_name=vocab_path, tokenizer_name=tokenizer_path)


@contextlib.contextmanager
def _atomic_writer(path: str):
    """A writable stream to a temporary name, renamed to ``path`` only when it closes cleanly."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    f = io_utils.FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
    except BaseException:
        f.close()
        io_utils.FileSystems.delete([tmp])
        raise
    f.close()
    if io_utils.exists(path):
        io_utils.FileSystems.delete([path])
    io_utils.FileSystems.rename([tmp], [path])


_DOC_HEADER = struct.Struct("<II")  # number of sentences, number of tokens


def encode_document(sentence_lengths: list[int], ids: list[int], dtype) -> bytes:
    """Spill form of a tokenized document: header, uint32 sentence lengths, ids of ``dtype``."""
    return (_DOC_HEADER.pack(len(sentence_lengths), len(ids)) + np.asarray(sentence_lengths, np.uint32).tobytes()
            + np.asarray(ids, dtype).tobytes())


def decode_document(data: bytes, dtype) -> list[list[int]]:
    """The sentences (lists of ids) of a spilled document."""
    n_sent, n_ids = _DOC_HEADER.unpack_from(data, 0)
    lengths = np.frombuffer(data, np.uint32, n_sent, _DOC_HEADER.size).tolist()
    ids = np.frombuffer(data, dtype, n_ids, _DOC_HEADER.size + 4 * n_sent).tolist()
    out = []
    start = 0
    for n in lengths:
        out.append(ids[start : start + n])
        start += n
    return out


def id_dtype(vocab_size: int):
    """The narrowest unsigned dtype for token ids."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


class _ReadAndTokenize(beam.DoFn):
    """A corpus file -> its documents' token ids in a spill file, tokenized in batches of lines.

    In: ``(split, path)``. Out: ``(split, doc_key, spill_path, offset, length)`` per document.
    """

    def __init__(self, config, spill_dir: str, batch_lines: int = 4096):
        self._tokenizer_path = config.tokenizer_path
        self._spill_dir = spill_dir
        self._batch_lines = batch_lines
        self._tokenizer = None
        self._documents = Metrics.counter(_NAMESPACE, "documents_read")
        self._empty = Metrics.counter(_NAMESPACE, "documents_without_tokens")
        self._bad_lines = Metrics.counter(_NAMESPACE, "lines_undecodable")

    def setup(self):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(io_utils.read_text(self._tokenizer_path))
        self._dtype = id_dtype(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def process(self, element: tuple[str, str]):
        split, path = element
        name = path.rstrip("/").rsplit("/", 1)[-1]
        spill_path = io_utils.join(self._spill_dir, f"docs-{name}.bin")
        refs: list[tuple] = []
        with _atomic_writer(spill_path) as out:
            offset = 0
            pending: list[list[str]] = []
            n_lines = 0
            for doc in self._documents_of(path):
                pending.append(doc)
                n_lines += len(doc)
                if n_lines >= self._batch_lines:
                    offset = self._tokenize(split, pending, out, spill_path, offset, refs)
                    pending, n_lines = [], 0
            self._tokenize(split, pending, out, spill_path, offset, refs)
        yield from refs

    def _documents_of(self, path: str):
        doc: list[str] = []
        with io_utils.FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            stream = io.BufferedReader(gzip.GzipFile(fileobj=raw)) if path.endswith(".gz") else raw
            for number, line in enumerate(stream, 1):
                try:
                    text = line.decode("utf-8").strip()
                except UnicodeDecodeError:
                    self._bad_lines.inc()
                    logger.warning("%s line %d: not UTF-8, skipped", path, number)
                    continue
                if text:
                    doc.append(text)
                elif doc:
                    yield doc
                    doc = []
        if doc:
            yield doc

    def _tokenize(self, split, docs, out, spill_path, offset, refs) -> int:
        if not docs:
            return offset
        lines = [line for d in docs for line in d]
        encodings = self._tokenizer.encode_batch_fast(lines, add_special_tokens=False)
        k = 0
        for d in docs:
            ids: list[int] = []
            lengths: list[int] = []
            for enc in encodings[k : k + len(d)]:
                piece = enc.ids
                if piece:
                    ids.extend(piece)
                    lengths.append(len(piece))
            k += len(d)
            self._documents.inc()
            if not lengths:
                self._empty.inc()
                continue
            data = encode_document(lengths, ids, self._dtype)
            out.write(data)
            refs.append((split, document_key(d), spill_path, offset, len(data)))
            offset += len(data)
        return offset


def _read_ranges(ranges: list[tuple[str, int, int]]) -> list[bytes]:
    """Reads (path, offset, length) ranges, one open file per path."""
    out: list[bytes] = [b""] * len(ranges)
    by_path: dict[str, list[int]] = {}
    for i, (path, _, _) in enumerate(ranges):
        by_path.setdefault(path, []).append(i)
    for path, indexes in by_path.items():
        with io_utils.FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for i in sorted(indexes, key=lambda j: ranges[j][1]):
                f.seek(ranges[i][1])
                out[i] = f.read(ranges[i][2])
                if len(out[i]) != ranges[i][2]:
                    raise ValueError(f"{path}: spill range at {ranges[i][1]} is truncated")
    return out


_RUN_CHUNK = 1 << 18  # bytes read from a run at a time
MAX_FAN_IN = 128  # runs merged at once; more runs are merged in passes through spill files


def _read_range(path: str, offset: int, size: int) -> bytes:
    with io_utils.FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.seek(offset)
        return f.read(size)


def _iter_run(path: str, offset: int, length: int, count: int):
    """Yields the ``key + framed record`` entries of one sorted run, reading it in chunks.

    The file is opened per chunk, so a merge of many runs holds no open file and at most
    one chunk per run.
    """
    end = offset + length
    pos = offset
    buf = b""
    i = 0
    for _ in range(count):
        while len(buf) - i < 20 or len(buf) - i < 24 + struct.unpack_from("<Q", buf, i + 8)[0]:
            data = _read_range(path, pos, min(_RUN_CHUNK, end - pos))
            if not data:
                raise ValueError(f"{path}: spill run at {offset} is truncated")
            buf = buf[i:] + data
            i = 0
            pos += len(data)
        size = 24 + struct.unpack_from("<Q", buf, i + 8)[0]
        yield buf[i : i + size]
        i += size
    if pos != end or i != len(buf):
        raise ValueError(f"{path}: spill run at {offset} does not hold {count} records")


def merge_runs(runs: list[tuple[str, int, int, int]], *, work_prefix: str):
    """Yields the entries of sorted runs ``(path, offset, length, count)`` in key order.

    With more than ``MAX_FAN_IN`` runs, groups are first merged into new runs written to
    ``work_prefix``-named files (removed by the caller's cleanup of the spill directory).
    """
    level = 0
    while len(runs) > MAX_FAN_IN:
        merged_runs = []
        for g in range(0, len(runs), MAX_FAN_IN):
            path = f"{work_prefix}-merge{level}-{g // MAX_FAN_IN:06d}.bin"
            count = length = 0
            with _atomic_writer(path) as out:
                for entry in heapq.merge(*(_iter_run(*r) for r in runs[g : g + MAX_FAN_IN])):
                    out.write(entry)
                    count += 1
                    length += len(entry)
            merged_runs.append((path, 0, length, count))
        runs = merged_runs
        level += 1
    yield from heapq.merge(*(_iter_run(*r) for r in runs))


class _BucketInstances(beam.DoFn):
    """A bucket of documents -> its instances, spilled to one file, as per-shard references.

    In: ``((split, bucket), [(split, doc_key, spill_path, offset, length), ...])``. Main out: ``((split, shard), (path,
    offset, length, count))``; tagged ``stats``: ``(split, SplitStats)``.
    """

    def __init__(self, config, spill_dir: str):
        self._config = config
        self._spill_dir = spill_dir
        self._vocab: VocabInfo | None = None

    def setup(self):
        c = self._config
        self._vocab = load_vocab(c.vocab_path, c.tokenizer_path)
        self._spec = self._vocab.masking_spec(
            masked_lm_prob=c.masked_lm_prob,
            max_predictions_per_seq=c.max_predictions_per_seq,
            whole_word_masking=c.whole_word_masking,
        )
        self._encoder = ExampleEncoder(
            max_seq_length=c.max_seq_length,
            max_predictions_per_seq=c.max_predictions_per_seq,
            vocab_size=self._vocab.vocab_size,
        )
        self._dtype = id_dtype(self._vocab.vocab_size)

    def process(self, element):
        (split, bucket), refs = element
        c = self._config
        # Arrival order depends on the runner; the documents' hashes do not.
        refs = sorted(refs, key=lambda r: (r[1], r[2], r[3]))
        blobs = _read_ranges([(r[2], r[3], r[4]) for r in refs])
        documents = [decode_document(b, self._dtype) for b in blobs]
        stats = SplitStats.empty(max_seq_length=c.max_seq_length,
                                 max_predictions_per_seq=c.max_predictions_per_seq,
                                 vocab_size=self._vocab.vocab_size)
        stats.documents = len(documents)
        stats.sentences = sum(len(d) for d in documents)
        for b in blobs:
            n_sent, n_ids = _DOC_HEADER.unpack_from(b, 0)
            ids = np.frombuffer(b, self._dtype, n_ids, _DOC_HEADER.size + 4 * n_sent)
            stats.token_counts += np.bincount(ids, minlength=self._vocab.vocab_size)
        del blobs

        split_index = _SPLIT_INDEX[split]
        num_shards = c.num_shards
        per_shard: list[list[bytes]] = [[] for _ in range(num_shards)]
        encode = self._encoder.encode
        max_num_tokens = c.max_seq_length - (3 if c.nsp else 2)
        for dupe in range(c.dupe_factor):
            rng = random.Random(mix(c.seed, split_index, bucket, dupe))
            if c.nsp:
                instances = []
                for index in range(len(documents)):
                    instances.extend(create_instances_from_document(
                        documents, index, max_seq_length=c.max_seq_length,
                        short_seq_prob=c.short_seq_prob, masking=self._spec, rng=rng))
            else:
                order = list(range(len(documents)))
                rng.shuffle(order)
                instances = create_packed_instances(
                    [documents[i] for i in order], max_seq_length=c.max_seq_length,
                    short_seq_prob=c.short_seq_prob, masking=self._spec, rng=rng)
            stats.add_instances(instances, mask_id=self._spec.mask_id, max_num_tokens=max_num_tokens)
            # Shard and order come from a stream of their own, so they spread the
            # instances of a document over all shards whatever the algorithm drew.
            key_rng = random.Random(mix(c.seed, split_index, bucket, dupe, -1))
            getrandbits = key_rng.getrandbits
            for inst in instances:
                key = getrandbits(64)
                record = encode(tokens=inst.tokens, num_segment_a=inst.num_segment_a,
                                masked_positions=inst.masked_positions, masked_ids=inst.masked_ids,
                                next_sentence_label=inst.is_random_next)
                per_shard[key % num_shards].append(_KEY.pack(key) + frame_record(record))

        path = io_utils.join(self._spill_dir, f"{split}-bucket-{bucket:06d}.bin")
        chunks = []
        refs = []
        offset = 0
        for shard, records in enumerate(per_shard):
            if not records:
                continue
            records.sort()
            blob = b"".join(records)
            chunks.append(blob)
            refs.append(((split, shard), (path, offset, len(blob), len(records))))
            offset += len(blob)
        io_utils.write_atomic(path, b"".join(chunks))
        yield from refs
        yield beam.pvalue.TaggedOutput("stats", (split, pickle.dumps(stats, protocol=4)))


class _WriteShard(beam.DoFn):
    """The sorted runs of one output shard -> the shard file, records in key order.

    Out: ``(split, records written)``.
    """

    def __init__(self, out_dir: str, num_shards: int, gzip_output: bool, spill_dir: str):
        self._out_dir = out_dir
        self._spill_dir = spill_dir
        self._num_shards = num_shards
        self._gzip = gzip_output
        self._counters = {s: Metrics.counter(_NAMESPACE, f"{s}_instances_written") for s in SPLITS}

    def process(self, element):
        (split, shard), refs = element
        runs = sorted(r for r in refs if r is not None)
        name = shard_name(split, shard, self._num_shards, gzip_output=self._gzip)
        n = 0
        # Each run is sorted by key: a k-way merge keeps one chunk per run in memory.
        merged = merge_runs(runs, work_prefix=io_utils.join(self._spill_dir, f"{split}-shard-{shard:05d}"))
        with _atomic_writer(io_utils.join(self._out_dir, name)) as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="") if self._gzip else raw
            buffer: list[bytes] = []
            size = 0
            for entry in merged:
                buffer.append(entry[8:])
                size += len(entry)
                n += 1
                if size >= 1 << 22:
                    out.write(b"".join(buffer))
                    buffer, size = [], 0
            out.write(b"".join(buffer))
            if self._gzip:
                out.close()
        self._counters[split].inc(n)
        yield split, n


def _assign_bucket(ref, counts, *, bucket_size: int, seed: int):
    split, key = ref[0], ref[1]
    num_buckets = max(1, -(-counts.get(split, 0) // bucket_size))
    return (split, mix(seed, key) % num_buckets), ref


class _MergeStats(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        split, blob = element
        stats = pickle.loads(blob)
        acc[split] = acc[split].merge(stats) if split in acc else stats
        return acc

    def merge_accumulators(self, accumulators):
        out = {}
        for acc in accumulators:
            for split, stats in acc.items():
                out[split] = out[split].merge(stats) if split in out else stats
        return out

    def extract_output(self, acc):
        return pickle.dumps(acc, protocol=4)


class CreatePretrainingExamples(beam.PTransform):
    """Corpus files -> serialized, framed examples spilled per bucket, as sorted runs per shard.

    In: ``(split, corpus file path)``. Out: a dict with ``refs`` (``((split, shard),
    (spill path, offset, length, count))``) and ``stats`` (pickled ``{split: SplitStats}``,
    one element).
    """

    def __init__(self, config, spill_dir: str):
        super().__init__()
        self._config = config
        self._spill_dir = spill_dir

    def expand(self, files):
        c = self._config
        docs = (
            files
            # Spreads the files over the workers (the list comes from one element).
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndTokenize" >> beam.ParDo(_ReadAndTokenize(c, self._spill_dir))
        )
        # The number of documents per split fixes the number of buckets.
        counts = docs | "SplitOf" >> beam.Map(lambda d: d[0]) | "CountDocuments" >> beam.combiners.Count.PerElement()
        results = (
            docs
            | "AssignBuckets" >> beam.Map(_assign_bucket, beam.pvalue.AsDict(counts),
                                          bucket_size=c.bucket_size, seed=c.seed)
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketInstances" >> beam.ParDo(_BucketInstances(c, self._spill_dir)).with_outputs("stats", main="refs")
        )
        # One global merge of the per-bucket statistics for the report.
        stats = results.stats | "MergeStats" >> beam.CombineGlobally(_MergeStats())
        return {"refs": results.refs, "stats": stats}


class WriteExamples(beam.PTransform):
    """Per-shard references -> ``{split}-SSSSS-of-NNNNN.tfrecord[.gz]`` files, every shard written.

    In: ``((split, shard), (spill path, offset, length, count))``. Out: ``(split, count)`` per shard.
    """

    def __init__(self, out_dir: str, *, num_shards: int, gzip_output: bool, spill_dir: str,
                 splits: Iterable[str] = SPLITS):
        super().__init__()
        self._out_dir = out_dir
        self._spill_dir = spill_dir
        self._num_shards = num_shards
        self._gzip = gzip_output
        self._splits = tuple(splits)

    def expand(self, refs):
        every_shard = refs.pipeline | "EveryShard" >> beam.Create(
            [((s, i), None) for s in self._splits for i in range(self._num_shards)])
        return (
            (refs, every_shard)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._out_dir, self._num_shards, self._gzip, self._spill_dir))
        )
