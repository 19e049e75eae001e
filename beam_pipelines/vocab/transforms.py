"""Beam transforms of the vocab stage: count words in parallel, learn the vocabulary on one worker."""

from __future__ import annotations

import logging
import zlib
from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import io_utils
from beam_pipelines.vocab import learn, tokenizer_spec

METRICS_NAMESPACE = "vocab"
logger = logging.getLogger(__name__)


class _CountWordsInBundle(beam.DoFn):
    """str line -> (word, partial count): counts a whole bundle before emitting anything.

    Blank lines (document ends) are skipped; the ``lines`` counter counts the others.

    Beam's per-element cost is paid once per distinct word of a bundle instead of once per
    occurrence; the counter is flushed when it holds ``max_distinct`` words, bounding memory.
    """

    def __init__(self, max_distinct: int) -> None:
        self._max_distinct = max_distinct
        self._lines = Metrics.counter(METRICS_NAMESPACE, "lines")
        self._occurrences = Metrics.counter(METRICS_NAMESPACE, "word_occurrences")

    def setup(self) -> None:
        self._splitter = tokenizer_spec.WordSplitter()

    def start_bundle(self) -> None:
        self._counts: Counter[str] = Counter()
        self._num_lines = 0

    def process(self, line: str):
        if not line or line.isspace():  # the blank line that ends a document
            return
        self._num_lines += 1
        self._counts.update(self._splitter.split(line))
        if len(self._counts) >= self._max_distinct:
            yield from self._flush()

    def finish_bundle(self):
        for word_count in self._flush():
            yield GlobalWindows.windowed_value(word_count)

    def _flush(self):
        self._lines.inc(self._num_lines)
        self._occurrences.inc(sum(self._counts.values()))
        counts, self._counts, self._num_lines = self._counts, Counter(), 0
        yield from counts.items()


class _KeepFrequent(beam.DoFn):
    """(word, count) -> (word, count) if count >= min_count; counts both sides.

    With ``with_alphabet``, also emits to the ``alphabet`` output the one-character pieces of
    every word, kept or not (:func:`beam_pipelines.vocab.learn.count_alphabet`), per bundle.
    """

    ALPHABET = "alphabet"

    def __init__(self, min_count: int, with_alphabet: bool) -> None:
        self._min_count = min_count
        self._with_alphabet = with_alphabet
        self._distinct = Metrics.counter(METRICS_NAMESPACE, "distinct_words")
        self._kept = Metrics.counter(METRICS_NAMESPACE, "distinct_words_kept")
        self._kept_occurrences = Metrics.counter(METRICS_NAMESPACE, "word_occurrences_kept")

    def start_bundle(self) -> None:
        self._alphabet: Counter[str] = Counter()

    def process(self, word_count: tuple[str, int]):
        self._distinct.inc()
        if self._with_alphabet:
            self._alphabet.update(learn.count_alphabet([word_count]))
        if word_count[1] >= self._min_count:
            self._kept.inc()
            self._kept_occurrences.inc(word_count[1])
            yield word_count

    def finish_bundle(self):
        for piece_count in self._alphabet.items():
            yield beam.pvalue.TaggedOutput(self.ALPHABET, GlobalWindows.windowed_value(piece_count))


class CountWords(beam.PTransform):
    """PCollection[str] of text lines -> PCollection[tuple[str, int]] of (word, count).

    Words are what the final tokenizer's normalizer and pre-tokenizer make of each line
    (:class:`beam_pipelines.vocab.tokenizer_spec.WordSplitter`); each word appears once, with its
    total count, and only if that count is at least ``min_count``.

    With ``with_alphabet=True`` the result is a pair ``(word_counts, alphabet_counts)``, the
    second a PCollection[tuple[str, int]] of one-character pieces (``c``, ``##c``) counted over
    every word, those under ``min_count`` included.
    """

    def __init__(self, *, min_count: int = 1, with_alphabet: bool = False, max_distinct_per_bundle: int = 200_000) -> None:
        super().__init__()
        self._min_count = min_count
        self._with_alphabet = with_alphabet
        self._max_distinct = max_distinct_per_bundle

    def expand(self, lines):
        outputs = (
            lines
            | "CountInBundles" >> beam.ParDo(_CountWordsInBundle(self._max_distinct))
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "DropRareWords"
            >> beam.ParDo(_KeepFrequent(self._min_count, self._with_alphabet)).with_outputs(
                _KeepFrequent.ALPHABET, main="words"
            )
        )
        if not self._with_alphabet:
            return outputs.words
        alphabet = outputs[_KeepFrequent.ALPHABET] | "SumAlphabet" >> beam.CombinePerKey(sum)
        return outputs.words, alphabet


def word_rank(word_count: tuple[str, int]) -> tuple[int, str]:
    """The order in which words are kept under ``max_words``: by count, ties by code points."""
    return word_count[1], word_count[0]


class _Learn(beam.DoFn):
    """list[(word, count)] -> LearnedVocabulary, on one worker."""

    def __init__(self, *, vocab_size: int, num_unused: int, min_pair_count: int, limit_alphabet: int) -> None:
        self._options = {
            "vocab_size": vocab_size,
            "num_unused": num_unused,
            "min_pair_count": min_pair_count,
            "limit_alphabet": limit_alphabet,
        }
        self._counters = {
            name: Metrics.counter(METRICS_NAMESPACE, name)
            for name in (
                "learner_words",
                "learner_word_occurrences",
                "learner_pieces",
                "learner_unk_occurrences",
                "learner_words_too_long",
                "learner_words_rare_characters",
            )
        }

    def process(self, word_counts: list[tuple[str, int]], alphabet_counts=None):
        logger.info("learning a vocabulary of %d from %d distinct words", self._options["vocab_size"], len(word_counts))
        learned = learn.learn_vocabulary(word_counts, alphabet_counts=alphabet_counts, **self._options)
        self._counters["learner_words"].inc(learned.words)
        self._counters["learner_word_occurrences"].inc(learned.word_occurrences)
        self._counters["learner_pieces"].inc(learned.pieces)
        self._counters["learner_unk_occurrences"].inc(learned.unk_occurrences)
        self._counters["learner_words_too_long"].inc(learned.words_too_long)
        self._counters["learner_words_rare_characters"].inc(learned.words_rare_characters)
        yield learned


class LearnVocabulary(beam.PTransform):
    """PCollection[tuple[str, int]] of (word, count) -> PCollection[LearnedVocabulary] (one element).

    Keeps the ``max_words`` most frequent words, then learns the vocabulary from them on one
    worker with :func:`beam_pipelines.vocab.learn.learn_vocabulary`. ``alphabet_counts``
    (optional, from ``CountWords(with_alphabet=True)``) picks the characters from every word.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_words: int,
        num_unused: int = 0,
        min_pair_count: int = 2,
        limit_alphabet: int = 1000,
        alphabet_counts=None,
    ) -> None:
        super().__init__()
        self._max_words = max_words
        self._alphabet_counts = alphabet_counts
        self._learn = _Learn(
            vocab_size=vocab_size, num_unused=num_unused, min_pair_count=min_pair_count, limit_alphabet=limit_alphabet
        )

    def expand(self, word_counts):
        return (
            word_counts
            # Global: the learner needs every word at once. Top keeps at most max_words per
            # worker while combining, so the one list that reaches the learner is bounded.
            | "KeepMostFrequentWords" >> beam.combiners.Top.Of(self._max_words, key=word_rank)
            | "Learn"
            >> beam.ParDo(
                self._learn,
                beam.pvalue.AsList(self._alphabet_counts) if self._alphabet_counts is not None else None,
            )
        )


def shard_of(word: str, num_shards: int) -> int:
    """The word-count shard of ``word``: a stable hash, the same on every worker and run."""
    return zlib.crc32(word.encode("utf-8")) % num_shards


def shard_name(index: int, num_shards: int) -> str:
    return f"word_counts-{index:05d}-of-{num_shards:05d}.tsv"


def format_word_counts(word_counts) -> bytes:
    """Formats (word, count) pairs as ``word<TAB>count`` lines, most frequent first, ties by word."""
    ordered = learn.canonical_word_order(word_counts)
    return "".join(f"{word}\t{count}\n" for word, count in ordered).encode("utf-8")


class _WriteShard(beam.DoFn):
    """(shard, [(word, count) or None]) -> path of the written shard."""

    def __init__(self, directory: str, num_shards: int) -> None:
        self._directory = directory
        self._num_shards = num_shards

    def process(self, shard_items):
        index, items = shard_items
        path = io_utils.join(self._directory, shard_name(index, self._num_shards))
        io_utils.write_atomic(path, format_word_counts(item for item in items if item is not None))
        yield path


class WriteWordCounts(beam.PTransform):
    """PCollection[tuple[str, int]] -> PCollection[str] of written paths.

    Writes ``word_counts-SSSSS-of-NNNNN.tsv`` into ``directory``: a word's shard is a hash of the
    word, each shard is sorted, so the files are byte-identical whatever the runner and workers.
    Every shard is written, empty ones included.
    """

    def __init__(self, directory: str, num_shards: int) -> None:
        super().__init__()
        self._directory = directory
        self._num_shards = num_shards

    def expand(self, word_counts):
        n = self._num_shards
        every_shard = (
            word_counts.pipeline
            | "ShardIndexes" >> beam.Create(range(n))
            | "EmptyShardMarkers" >> beam.Map(lambda i: (i, None))
        )
        keyed = word_counts | "KeyByShard" >> beam.Map(lambda wc: (shard_of(wc[0], n), wc))
        return (
            (keyed, every_shard)
            | "AllShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self._directory, n))
        )


class _WriteTokenizer(beam.DoFn):
    """LearnedVocabulary -> paths of vocab.txt, tokenizer.json and the Hugging Face files."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def process(self, learned: learn.LearnedVocabulary):
        files = tokenizer_spec.tokenizer_files(learned.tokens)
        # vocab.txt last: its presence means the whole tokenizer is there.
        for name in sorted(files, key=lambda n: n == "vocab.txt"):
            path = io_utils.join(self._directory, name)
            io_utils.write_atomic(path, files[name])
            yield path


class WriteTokenizer(beam.PTransform):
    """PCollection[LearnedVocabulary] -> PCollection[str] of written paths (in ``directory``)."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._directory = directory

    def expand(self, learned):
        return learned | "WriteTokenizerFiles" >> beam.ParDo(_WriteTokenizer(self._directory))
