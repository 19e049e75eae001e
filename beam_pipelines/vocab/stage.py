"""The vocab stage: count words with Beam, learn a WordPiece vocabulary, write the tokenizer.

Reads ``OUTPUT_DIR/corpus/train-*.txt.gz`` (or ``--vocab_input``) and writes ``OUTPUT_DIR/vocab/``:
``word_counts-SSSSS-of-NNNNN.tsv``, ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``; then ``OUTPUT_DIR/reports/vocab.json``. Local::

    python -m beam_pipelines.build --stages vocab --output_dir /tmp/hi_bert --vocab_size 32000 \\
        --direct_running_mode=multi_processing --direct_num_workers=2

Google Cloud Dataflow::

    python -m beam_pipelines.build --stages vocab --output_dir gs://B/out --vocab_size 32000 \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \\
        --setup_file=./setup.py
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from beam_pipelines import io_utils
from beam_pipelines.vocab import tokenizer_spec, transforms

logger = logging.getLogger(__name__)

DEFAULT_WORD_COUNT_SHARDS = 4


@dataclasses.dataclass(frozen=True)
class VocabConfig:
    """Configuration of the vocab stage.

    Attributes:
        output_dir: the build's output directory (local or gs://).
        input_pattern: glob of corpus-format text files (gzip or plain) to count words in.
        vocab_size: entries of vocab.txt, special and unused tokens included.
        min_count: words seen fewer times are dropped before anything global.
        max_words: at most this many distinct words (the most frequent) reach the learner.
        num_unused: ``[unusedN]`` entries reserved after the special tokens.
        min_pair_count: the learner merges a pair of pieces only if it occurs this often.
        limit_alphabet: the learner starts from at most this many characters.
        num_shards: files of word counts.
    """

    output_dir: str
    input_pattern: str
    vocab_size: int = 32000
    min_count: int = 1
    max_words: int = 2_000_000
    num_unused: int = 0
    min_pair_count: int = 2
    limit_alphabet: int = 1000
    num_shards: int = DEFAULT_WORD_COUNT_SHARDS

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("--output_dir is empty")
        if not self.input_pattern:
            raise ValueError("--vocab_input is empty")
        minimum = len(tokenizer_spec.SPECIAL_TOKENS) + self.num_unused + 1
        if self.num_unused < 0:
            raise ValueError(f"--num_unused must be >= 0, got {self.num_unused}")
        if self.vocab_size < minimum:
            raise ValueError(
                f"--vocab_size must be >= {minimum} (5 special + {self.num_unused} unused + 1), got {self.vocab_size}"
            )
        for flag, value in (
            ("--min_count", self.min_count),
            ("--max_words", self.max_words),
            ("--min_pair_count", self.min_pair_count),
            ("--limit_alphabet", self.limit_alphabet),
            ("--num_shards", self.num_shards),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")

    @property
    def vocab_dir(self) -> str:
        return io_utils.join(self.output_dir, "vocab")

    @property
    def report_path(self) -> str:
        return io_utils.join(self.output_dir, "reports", "vocab.json")


def default_input_pattern(output_dir: str) -> str:
    """The corpus stage's training shards under ``output_dir``."""
    return io_utils.join(output_dir, "corpus", "train-*.txt.gz")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Adds the vocab stage's flags to ``group``."""
    group.add_argument("--vocab_input", default=None,
                       help="glob of corpus-format text files to learn from (default: OUTPUT_DIR/corpus/train-*.txt.gz)")
    group.add_argument("--vocab_size", type=int, default=32000,
                       help="entries in vocab.txt, special and unused tokens included (default %(default)s)")
    group.add_argument("--min_count", type=int, default=1,
                       help="drop words seen fewer times before the global steps; 1 keeps every word, as the seed's "
                            "method does (default %(default)s)")
    group.add_argument("--max_words", type=int, default=2_000_000,
                       help="most frequent distinct words sent to the learner; bounds its memory (default %(default)s)")
    group.add_argument("--num_unused", type=int, default=0,
                       help="[unusedN] entries reserved after the special tokens (default %(default)s)")
    group.add_argument("--min_pair_count", type=int, default=2,
                       help="the learner merges a pair of pieces only if it occurs this often (default %(default)s)")
    group.add_argument("--limit_alphabet", type=int, default=1000,
                       help="most frequent characters the vocabulary starts from; words with others are [UNK] "
                            "(default %(default)s)")


def config_from_args(args: argparse.Namespace) -> VocabConfig:
    """Builds the stage's config from parsed flags.

    Raises:
        ValueError: naming the offending flag.
    """
    return VocabConfig(
        output_dir=args.output_dir,
        input_pattern=args.vocab_input or default_input_pattern(args.output_dir),
        vocab_size=args.vocab_size,
        min_count=args.min_count,
        max_words=args.max_words,
        num_unused=args.num_unused,
        min_pair_count=args.min_pair_count,
        limit_alphabet=args.limit_alphabet,
        num_shards=args.num_shards if args.num_shards is not None else DEFAULT_WORD_COUNT_SHARDS,
    )


def preflight(config: VocabConfig) -> None:
    """Checks that the input exists before any job starts.

    Raises:
        FileNotFoundError: if the input pattern matches no file, saying how to make it.
    """
    try:
        io_utils.match_patterns([config.input_pattern])
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"vocab stage: {e}. Run the corpus stage first (--stages corpus,vocab) or point --vocab_input "
            "at corpus-format text files"
        ) from None


def build_pipeline(p, config: VocabConfig):
    """Adds the vocab stage to pipeline ``p``.

    Returns:
        The PCollection of written tokenizer file paths.
    """
    import apache_beam as beam

    word_counts, alphabet_counts = (
        p
        | "ReadCorpus" >> beam.io.ReadFromText(config.input_pattern, validate=False)
        | "CountWords" >> transforms.CountWords(min_count=config.min_count, with_alphabet=True)
    )
    _ = word_counts | "WriteWordCounts" >> transforms.WriteWordCounts(config.vocab_dir, config.num_shards)
    return (
        word_counts
        | "LearnVocabulary"
        >> transforms.LearnVocabulary(
            vocab_size=config.vocab_size,
            max_words=config.max_words,
            num_unused=config.num_unused,
            min_pair_count=config.min_pair_count,
            limit_alphabet=config.limit_alphabet,
            alphabet_counts=alphabet_counts,
        )
        | "WriteTokenizer" >> transforms.WriteTokenizer(config.vocab_dir)
    )


def _counters(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(transforms.METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def _remove_stale_shards(config: VocabConfig) -> list[str]:
    """Deletes word-count shards of an earlier run with another number of shards."""
    current = [io_utils.join(config.vocab_dir, transforms.shard_name(i, config.num_shards))
               for i in range(config.num_shards)]
    return io_utils.remove_stale_files(io_utils.join(config.vocab_dir, "word_counts-*.tsv"), current)


def finalize(config: VocabConfig, result) -> dict[str, object]:
    """Checks the outputs, writes ``reports/vocab.json`` and returns its content."""
    vocab_path = io_utils.join(config.vocab_dir, "vocab.txt")
    tokens = tokenizer_spec.read_vocab_txt(io_utils.read_text(vocab_path).split("\n"))
    if len(tokens) != config.vocab_size:
        raise RuntimeError(f"{vocab_path} has {len(tokens)} entries, expected --vocab_size {config.vocab_size}")
    stale = _remove_stale_shards(config)
    counters = _counters(result)
    occurrences = counters.get("learner_word_occurrences", 0)
    report = {
        "stage": "vocab",
        "input_pattern": config.input_pattern,
        "vocab_dir": config.vocab_dir,
        "config": dataclasses.asdict(config),
        "vocab_size": len(tokens),
        "special_token_ids": {t: tokens.index(t) for t in tokenizer_spec.SPECIAL_TOKENS},
        "num_unused": config.num_unused,
        "num_learned": len(tokens) - len(tokenizer_spec.reserved_tokens(config.num_unused)),
        "word_count_files": [transforms.shard_name(i, config.num_shards) for i in range(config.num_shards)],
        "stale_word_count_files_removed": stale,
        "counts": counters,
        "training_pieces_per_word": counters.get("learner_pieces", 0) / occurrences if occurrences else None,
        "training_unk_rate": counters.get("learner_unk_occurrences", 0) / occurrences if occurrences else None,
    }
    io_utils.write_json_atomic(config.report_path, report)
    logger.info("vocab: %d entries in %s", len(tokens), vocab_path)
    return report
