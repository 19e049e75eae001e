"""The pretraining stage: masked-LM/NSP TFRecords from the cleaned corpus and the vocabulary.

Reads ``OUT/corpus/{train,validation}-*.txt.gz`` and ``OUT/vocab/{vocab.txt,tokenizer.json}``;
writes ``OUT/pretraining/seq{L}/{split}-SSSSS-of-NNNNN.tfrecord[.gz]``, then the report
(``OUT/reports/pretraining.json`` and PNGs), then ``metadata.json`` last.

Local::

    python -m beam_pipelines.build --stages pretraining --output_dir /tmp/hi_bert \\
        --max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 5 --num_shards 16 \\
        --direct_running_mode=multi_processing --direct_num_workers=2

Google Cloud Dataflow::

    python -m beam_pipelines.build --stages pretraining --output_dir gs://B/hi_bert \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \\
        --setup_file=./setup.py --num_shards 256
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pickle

from beam_pipelines import io_utils

FORMAT_NAME = "bert-pretraining-tfrecord"
FORMAT_VERSION = 1
DEFAULT_NUM_SHARDS = 16
SPILL_DIR_NAME = "_spill"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    """Options of the pretraining stage (flags of the same names)."""

    output_dir: str
    seed: int = 12345
    num_shards: int = DEFAULT_NUM_SHARDS
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 5
    short_seq_prob: float = 0.1
    whole_word_masking: bool = False
    nsp: bool = True
    gzip: bool = False
    bucket_size: int = 64

    def __post_init__(self):
        min_len = 5 if self.nsp else 4
        if self.max_seq_length < min_len or self.max_seq_length > 4096:
            raise ValueError(f"--max_seq_length must be in [{min_len}, 4096], got {self.max_seq_length}")
        if not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            raise ValueError(
                f"--max_predictions_per_seq must be in [1, max_seq_length={self.max_seq_length}], "
                f"got {self.max_predictions_per_seq}"
            )
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"--masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.dupe_factor < 1:
            raise ValueError(f"--dupe_factor must be >= 1, got {self.dupe_factor}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"--short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.bucket_size < 2:
            raise ValueError(f"--bucket_size must be >= 2 (NSP negatives come from other documents), "
                             f"got {self.bucket_size}")
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")

    @property
    def corpus_dir(self) -> str:
        return io_utils.join(self.output_dir, "corpus")

    @property
    def vocab_path(self) -> str:
        return io_utils.join(self.output_dir, "vocab", "vocab.txt")

    @property
    def tokenizer_path(self) -> str:
        return io_utils.join(self.output_dir, "vocab", "tokenizer.json")

    @property
    def seq_dir(self) -> str:
        return io_utils.join(self.output_dir, "pretraining", f"seq{self.max_seq_length}")

    @property
    def spill_dir(self) -> str:
        return io_utils.join(self.seq_dir, SPILL_DIR_NAME)

    @property
    def reports_dir(self) -> str:
        return io_utils.join(self.output_dir, "reports")


def add_arguments(group) -> None:
    group.add_argument("--max_seq_length", type=int, default=128, help="tokens per sequence (default %(default)s)")
    group.add_argument("--max_predictions_per_seq", type=int, default=20,
                       help="cap on masked positions per sequence (default %(default)s)")
    group.add_argument("--masked_lm_prob", type=float, default=0.15,
                       help="share of tokens to predict (default %(default)s)")
    group.add_argument("--dupe_factor", type=int, default=5,
                       help="passes over the data, each with new splits and masks (default %(default)s)")
    group.add_argument("--short_seq_prob", type=float, default=0.1,
                       help="probability of a shorter target length (default %(default)s)")
    group.add_argument("--whole_word_masking", action="store_true", help="mask every piece of a word together")
    group.add_argument("--no_nsp", action="store_true",
                       help="MLM only: pack contiguous sentences, documents joined by [SEP]")
    group.add_argument("--gzip", action="store_true", help="write .tfrecord.gz (GZIP) files")
    group.add_argument("--bucket_size", type=int, default=64,
                       help="documents per NSP bucket, the pool of random-B documents (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> PretrainingConfig:
    return PretrainingConfig(
        output_dir=args.output_dir,
        seed=args.seed,
        num_shards=args.num_shards if args.num_shards is not None else DEFAULT_NUM_SHARDS,
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob,
        dupe_factor=args.dupe_factor,
        short_seq_prob=args.short_seq_prob,
        whole_word_masking=args.whole_word_masking,
        nsp=not args.no_nsp,
        gzip=args.gzip,
        bucket_size=args.bucket_size,
    )


def _corpus_pattern(config: PretrainingConfig, split: str) -> str:
    return io_utils.join(config.corpus_dir, f"{split}-*.txt.gz")


def preflight(config: PretrainingConfig) -> None:
    """Checks the inputs and removes a stale ``metadata.json`` before the run.

    Raises:
        FileNotFoundError: naming the missing corpus files or vocabulary file.
        ValueError: when ``vocab.txt`` and ``tokenizer.json`` disagree.
    """
    from beam_pipelines.pretraining.transforms import load_vocab

    pattern = _corpus_pattern(config, "train")
    try:
        io_utils.match_patterns([pattern])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"pretraining: no corpus files ({e}); run the corpus stage first") from e
    for path in (config.vocab_path, config.tokenizer_path):
        if not io_utils.exists(path):
            raise FileNotFoundError(f"pretraining: {path} not found; run the vocab stage first")
    load_vocab(config.vocab_path, config.tokenizer_path)
    metadata = io_utils.join(config.seq_dir, "metadata.json")
    if io_utils.exists(metadata):
        # A crash later must not leave the old metadata describing new, partial files.
        io_utils.FileSystems.delete([metadata])


def build_pipeline(p, config: PretrainingConfig) -> None:
    import apache_beam as beam
    from apache_beam.io import fileio

    from beam_pipelines.pretraining.transforms import CreatePretrainingExamples, WriteExamples

    def tag(split):
        return lambda m: (split, m.path)

    files = [
        p
        | f"Match{split.capitalize()}" >> fileio.MatchFiles(_corpus_pattern(config, split),
                                                         empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
        | f"Tag{split.capitalize()}" >> beam.Map(tag(split))
        for split in ("train", "validation")
    ]
    created = (files | "CorpusFiles" >> beam.Flatten()
               | "CreatePretrainingExamples" >> CreatePretrainingExamples(config, config.spill_dir))
    (created["refs"]
     | "WriteExamples" >> WriteExamples(config.seq_dir, num_shards=config.num_shards, gzip_output=config.gzip,
                                      spill_dir=config.spill_dir))
    spill_stats = io_utils.join(config.spill_dir, "stats.pkl")
    created["stats"] | "WriteStats" >> beam.Map(lambda blob: io_utils.write_atomic(spill_stats, blob))


def _metric_counts(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    counts: dict[str, int] = {}
    try:
        queried = result.metrics().query(MetricsFilter().with_namespace("pretraining"))
    except Exception:  # noqa: BLE001 (a runner without metrics)
        return counts
    for c in queried["counters"]:
        counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(c.committed or 0)
    return counts


def _input_counts(config: PretrainingConfig, metrics: dict[str, int]) -> dict:
    path = io_utils.join(config.reports_dir, "corpus.json")
    if io_utils.exists(path):
        import json

        corpus = json.loads(io_utils.read_text(path))
        return {
            "documents_read": corpus.get("records_read", 0),
            "records_malformed": corpus.get("records_malformed", 0),
            "documents_kept": corpus.get("documents_kept", 0),
            "documents_dropped": corpus.get("documents_dropped", {}),
        }
    return {
        "documents_read": metrics.get("documents_read", 0),
        "documents_kept": metrics.get("documents_read", 0) - metrics.get("documents_without_tokens", 0),
        "documents_dropped": {"without_tokens": metrics.get("documents_without_tokens", 0)},
    }


def finalize(config: PretrainingConfig, result) -> dict:
    """Writes the report, removes the spill files, then writes ``metadata.json`` last.

    Returns:
        The metadata dict.

    Raises:
        RuntimeError: when a shard file is missing or the counts disagree.
    """
    from beam_pipelines.pretraining import report
    from beam_pipelines.pretraining.transforms import SPLITS, load_vocab, shard_name

    vocab = load_vocab(config.vocab_path, config.tokenizer_path)
    stats_path = io_utils.join(config.spill_dir, "stats.pkl")
    stats = pickle.loads(io_utils.read_bytes(stats_path)) if io_utils.exists(stats_path) else {}
    metrics = _metric_counts(result)

    splits = {}
    for split in SPLITS:
        names = [shard_name(split, i, config.num_shards, gzip_output=config.gzip) for i in range(config.num_shards)]
        missing = [n for n in names if not io_utils.exists(io_utils.join(config.seq_dir, n))]
        if missing:
            raise RuntimeError(f"pretraining: shard files missing in {config.seq_dir}: {missing[:3]}")
        n = stats[split].instances if split in stats else 0
        written = metrics.get(f"{split}_instances_written")
        if written is not None and written != n:
            raise RuntimeError(f"pretraining: {split}: {written} instances written but {n} created")
        suffix = ".tfrecord.gz" if config.gzip else ".tfrecord"
        splits[split] = {
            "file_pattern": f"{split}-*-of-{config.num_shards:05d}{suffix}",
            "num_files": config.num_shards,
            "num_examples": n,
        }

    summaries = {
        split: report.split_summary(s, tokens=vocab.tokens, unk_id=vocab.special_ids["[UNK]"],
                                    special_ids=vocab.special_ids.values())
        for split, s in stats.items()
    }
    report_doc = {
        "stage": "pretraining",
        "max_seq_length": config.max_seq_length,
        "max_predictions_per_seq": config.max_predictions_per_seq,
        "nsp": config.nsp,
        "whole_word_masking": config.whole_word_masking,
        "bucket_size": config.bucket_size,
        "splits": summaries,
        "metrics": metrics,
    }
    io_utils.write_json_atomic(io_utils.join(config.reports_dir, "pretraining.json"), report_doc)
    if summaries:
        for name, png in report.write_plots(summaries, max_seq_length=config.max_seq_length,
                                            max_predictions_per_seq=config.max_predictions_per_seq).items():
            io_utils.write_atomic(io_utils.join(config.reports_dir, name), png)

    current = [io_utils.join(config.seq_dir, shard_name(split, i, config.num_shards, gzip_output=config.gzip))
               for split in SPLITS for i in range(config.num_shards)]
    stale = []
    for split in SPLITS:
        stale += io_utils.remove_stale_files(io_utils.join(config.seq_dir, f"{split}-*-of-*.tfrecord*"), current)
    if stale:
        logger.info("pretraining: removed %d file(s) of an earlier run with other shard settings", len(stale))

    # On gs:// a folder is only a prefix (exists() is False for it), so list the files themselves.
    spill = [path for path, _ in io_utils.match_with_sizes(io_utils.join(config.spill_dir, "*"))]
    if spill:
        io_utils.FileSystems.delete(spill)
    if io_utils.exists(config.spill_dir):
        io_utils.FileSystems.delete([config.spill_dir])

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "max_seq_length": config.max_seq_length,
        "max_predictions_per_seq": config.max_predictions_per_seq,
        "vocab_size": vocab.vocab_size,
        "vocab_file": "vocab/vocab.txt",
        "tokenizer_file": "vocab/tokenizer.json",
        "special_token_ids": dict(vocab.special_ids),
        "nsp": config.nsp,
        "compression": "GZIP" if config.gzip else None,
        "masking": {
            "masked_lm_prob": config.masked_lm_prob,
            "whole_word_masking": config.whole_word_masking,
            "mask_token_prob": 0.8,
            "random_token_prob": 0.1,
            "keep_prob": 0.1,
            "random_token_pool": "ordinary",
        },
        "short_seq_prob": config.short_seq_prob,
        "dupe_factor": config.dupe_factor,
        "seed": config.seed,
        "bucket_size": config.bucket_size,
        "splits": splits,
        "input_counts": _input_counts(config, metrics),
    }
    io_utils.write_json_atomic(io_utils.join(config.seq_dir, "metadata.json"), metadata)
    logger.info("pretraining: %s", {s: v["num_examples"] for s, v in splits.items()})
    return metadata
