"""Beam transforms of the pretraining stage: ``CreatePretrainingExamples`` and ``WriteExamples``.

Data flow (each element is a batch, since Beam's per-element cost dominates)::

    corpus file paths ──ReadAndTokenize──► (split, doc_key, ids, sentence_lengths) per document
        ──AssignBuckets (count per split as side input)──► ((split, bucket), document)
        ──GroupByKey──► a bucket of documents
        ──BucketInstances──► one spill file per bucket, records grouped by output shard,
                              and a reference (split, shard) -> (file, offset, length) per shard
        ──GroupByKey──► the references of one output shard
        ──WriteShard──► SPLIT-SSSSS-of-NNNNN.tfrecord[.gz], records sorted by a random key

Only document token ids and small references go through the shuffles; the records
themselves go through spill files, so memory stays flat in the size of the input.
Every random choice is seeded from (seed, split, bucket, dupe pass), and the bucket's
documents are sorted by their hash first, so output bytes do not depend on the runner.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import random
import struct
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


class _ReadAndTokenize(beam.DoFn):
    """A corpus file -> its documents as token ids, tokenized in batches of lines.

    Out: ``(split, doc_key, ids_int32_bytes, sentence_lengths_int32_bytes)``.
    """

    def __init__(self, tokenizer_path: str, batch_lines: int = 4096):
        self._tokenizer_path = tokenizer_path
        self._batch_lines = batch_lines
        self._tokenizer = None
        self._documents = Metrics.counter(_NAMESPACE, "documents_read")
        self._empty = Metrics.counter(_NAMESPACE, "documents_without_tokens")
        self._bad_lines = Metrics.counter(_NAMESPACE, "lines_undecodable")

    def setup(self):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(io_utils.read_text(self._tokenizer_path))

    def process(self, element: tuple[str, str]):
        split, path = element
        pending: list[list[str]] = []
        n_lines = 0
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
                    pending.append(doc)
                    n_lines += len(doc)
                    doc = []
                    if n_lines >= self._batch_lines:
                        yield from self._tokenize(split, pending)
                        pending, n_lines = [], 0
        if doc:
            pending.append(doc)
        yield from self._tokenize(split, pending)

    def _tokenize(self, split: str, docs: list[list[str]]):
        if not docs:
            return
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
            yield (split, document_key(d), np.asarray(ids, np.int32).tobytes(),
                   np.asarray(lengths, np.int32).tobytes())


def _decode_document(ids_bytes: bytes, lengths_bytes: bytes) -> list[list[int]]:
    ids = np.frombuffer(ids_bytes, np.int32).tolist()
    out = []
    start = 0
    for n in np.frombuffer(lengths_bytes, np.int32).tolist():
        out.append(ids[start : start + n])
        start += n
    return out


class _BucketInstances(beam.DoFn):
    """A bucket of documents -> its instances, spilled to one file, as per-shard references.

    In: ``((split, bucket), [document, ...])``. Main out: ``((split, shard), (path,
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

    def process(self, element):
        (split, bucket), docs = element
        c = self._config
        docs = sorted(docs, key=lambda d: (d[1], d[2]))
        documents = [_decode_document(d[2], d[3]) for d in docs]
        stats = SplitStats.empty(max_seq_length=c.max_seq_length,
                                 max_predictions_per_seq=c.max_predictions_per_seq,
                                 vocab_size=self._vocab.vocab_size)
        stats.documents = len(documents)
        stats.sentences = sum(len(d) for d in documents)
        for d in docs:
            stats.token_counts += np.bincount(np.frombuffer(d[2], np.int32), minlength=self._vocab.vocab_size)

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
            blob = b"".join(records)
            chunks.append(blob)
            refs.append(((split, shard), (path, offset, len(blob), len(records))))
            offset += len(blob)
        io_utils.write_atomic(path, b"".join(chunks))
        yield from refs
        yield beam.pvalue.TaggedOutput("stats", (split, pickle.dumps(stats, protocol=4)))


class _WriteShard(beam.DoFn):
    """The references of one output shard -> the shard file, records sorted by key.

    Out: ``(split, records written)``.
    """

    def __init__(self, out_dir: str, num_shards: int, gzip_output: bool):
        self._out_dir = out_dir
        self._num_shards = num_shards
        self._gzip = gzip_output
        self._counters = {s: Metrics.counter(_NAMESPACE, f"{s}_instances_written") for s in SPLITS}

    def process(self, element):
        (split, shard), refs = element
        refs = sorted(r for r in refs if r is not None)
        entries: list[bytes] = []
        for path, offset, length, count in refs:
            with io_utils.FileSystems.open(path) as f:
                f.seek(offset)
                blob = f.read(length)
            pos = 0
            for _ in range(count):
                (size,) = struct.unpack_from("<Q", blob, pos + 8)
                end = pos + 8 + 16 + size
                entries.append(blob[pos:end])
                pos = end
            if pos != len(blob):
                raise ValueError(f"{path}: spill range at {offset} is corrupt")
        entries.sort()
        payload = b"".join(e[8:] for e in entries)
        if self._gzip:
            payload = gzip.compress(payload, compresslevel=6, mtime=0)
        name = shard_name(split, shard, self._num_shards, gzip_output=self._gzip)
        io_utils.write_atomic(io_utils.join(self._out_dir, name), payload)
        self._counters[split].inc(len(entries))
        yield split, len(entries)


def _assign_bucket(doc, counts, *, bucket_size: int, seed: int):
    split, key = doc[0], doc[1]
    num_buckets = max(1, -(-counts.get(split, 0) // bucket_size))
    return (split, mix(seed, key) % num_buckets), doc


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
    """Corpus files -> serialized, framed examples spilled per bucket, referenced per shard.

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
            | "ReadAndTokenize" >> beam.ParDo(_ReadAndTokenize(c.tokenizer_path))
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

    def __init__(self, out_dir: str, *, num_shards: int, gzip_output: bool, splits: Iterable[str] = SPLITS):
        super().__init__()
        self._out_dir = out_dir
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
            | "WriteShard" >> beam.ParDo(_WriteShard(self._out_dir, self._num_shards, self._gzip))
        )
