"""The corpus stage: raw OSCAR files in, clean, deduplicated, sharded Hindi documents out.

Local, on the sample bundled with the package::

    python -m beam_pipelines.build --stages corpus --output_dir /tmp/hi_bert

Local, two worker processes, an OSCAR 23.01 download::

    python -m beam_pipelines.build --stages corpus --input 'data/hi_meta_part_*.jsonl.zst' \\
        --output_dir /tmp/hi_bert --num_shards 64 \\
        --direct_running_mode=multi_processing --direct_num_workers=2

Google Cloud Dataflow::

    python -m beam_pipelines.build --stages corpus --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://B/tmp --setup_file=./setup.py \\
        --input='gs://B/oscar/hi_meta_part_*.jsonl.zst' --output_dir=gs://B/out --num_shards 256

Writes ``OUT/corpus/{train,validation}-SSSSS-of-NNNNN.txt.gz``,
``OUT/rejected/rejected-SSSSS-of-NNNNN.jsonl.gz`` and ``OUT/reports/corpus.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os

import apache_beam as beam

from beam_pipelines import io_utils
from beam_pipelines.corpus import filters, readers, sources, transforms

DEFAULT_NUM_SHARDS = 8
DEFAULT_INPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data",
                             "*.jsonl.zst")
REPORT = "corpus.json"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Options of the corpus stage (see ``add_arguments`` for their meaning)."""

    input_patterns: tuple[str, ...]
    output_dir: str
    input_format: str = readers.AUTO
    num_shards: int = DEFAULT_NUM_SHARDS
    validation_fraction: float = 0.02
    language: str = "hi"
    min_language_prob: float = 0.8
    drop_quality_warnings: tuple[str, ...] = ("adult", "noisy", "tiny")
    min_harmful_pp: float | None = 40.0
    drop_categories: tuple[str, ...] = ("adult",)
    min_document_chars: int = 100
    min_devanagari_share: float = 0.5
    dedup: bool = True
    read_split_bytes: int = 64 << 20
    max_record_bytes: int = 16 << 20

    def __post_init__(self):
        if not self.input_patterns or any(not p for p in self.input_patterns):
            raise ValueError(f"--input needs one or more non-empty patterns, got {self.input_patterns!r}")
        if not self.output_dir:
            raise ValueError("--output_dir is empty")
        if self.input_format not in readers.FORMATS:
            raise ValueError(f"--input_format must be one of {readers.FORMATS}, got {self.input_format!r}")
        if self.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {self.num_shards}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"--validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not self.language:
            raise ValueError("--language is empty")
        if not 0.0 <= self.min_language_prob <= 1.0:
            raise ValueError(f"--min_language_prob must be in [0, 1], got {self.min_language_prob}")
        if self.min_harmful_pp is not None and (math.isnan(self.min_harmful_pp) or self.min_harmful_pp < 0):
            raise ValueError(f"--min_harmful_pp must be >= 0, got {self.min_harmful_pp}")
        if self.min_document_chars < 0:
            raise ValueError(f"--min_document_chars must be >= 0, got {self.min_document_chars}")
        if not 0.0 <= self.min_devanagari_share <= 1.0:
            raise ValueError(f"--min_devanagari_share must be in [0, 1], got {self.min_devanagari_share}")
        if self.read_split_bytes < 1:
            raise ValueError(f"--read_split_mb must be > 0, got {self.read_split_bytes / 2**20} MiB")
        if self.max_record_bytes < 1:
            raise ValueError(f"--max_record_mb must be > 0, got {self.max_record_bytes / 2**20} MiB")

    @property
    def train_shards(self) -> int:
        return self.num_shards

    @property
    def validation_shards(self) -> int:
        """``ceil(num_shards * validation_fraction)``, at least 1 (an empty file if no document)."""
        return max(1, math.ceil(self.num_shards * self.validation_fraction))

    @property
    def filter_settings(self) -> filters.FilterSettings:
        return filters.FilterSettings(
            language=self.language,
            min_language_prob=self.min_language_prob,
            drop_quality_warnings=frozenset(self.drop_quality_warnings),
            min_harmful_pp=self.min_harmful_pp,
            drop_categories=frozenset(self.drop_categories),
            min_document_chars=self.min_document_chars,
            min_devanagari_share=self.min_devanagari_share,
        )


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(sorted({v.strip() for v in value.split(",") if v.strip()}))


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Adds the corpus stage's flags."""
    d = CorpusConfig(input_patterns=("x",), output_dir="x")
    group.add_argument("--input", default=DEFAULT_INPUT,
                       help="comma-separated file patterns, local or gs:// (default: the bundled sample)")
    group.add_argument("--input_format", default=d.input_format, choices=readers.FORMATS,
                       help="OSCAR release of the input; auto tells it from each file name (default %(default)s)")
    group.add_argument("--validation_fraction", type=float, default=d.validation_fraction,
                       help="share of documents, by hash of their text, in the validation split (default %(default)s)")
    group.add_argument("--language", default=d.language,
                       help="OSCAR language label to keep (default %(default)s)")
    group.add_argument("--min_language_prob", type=float, default=d.min_language_prob,
                       help="minimum OSCAR language-identification probability (default %(default)s)")
    group.add_argument("--drop_quality_warnings", default=",".join(d.drop_quality_warnings),
                       help="comma-separated OSCAR quality warnings that drop a document; '' keeps all "
                            "(default %(default)s)")
    group.add_argument("--min_harmful_pp", type=float, default=d.min_harmful_pp,
                       help="drop documents whose OSCAR harmful_pp (perplexity under a model of harmful text; "
                            "lower is more likely harmful) is below this; 0 disables (default %(default)s)")
    group.add_argument("--drop_categories", default=",".join(d.drop_categories),
                       help="comma-separated OSCAR (UT1 blocklist) categories that drop a document; '' keeps "
                            "all (default %(default)s)")
    group.add_argument("--min_document_chars", type=int, default=d.min_document_chars,
                       help="minimum characters of a normalized document, spaces not counted (default %(default)s)")
    group.add_argument("--min_devanagari_share", type=float, default=d.min_devanagari_share,
                       help="minimum share of Devanagari among a document's letters (default %(default)s)")
    group.add_argument("--no_dedup", action="store_true",
                       help="keep exact duplicate documents (by default only the first copy is kept)")
    group.add_argument("--read_split_mb", type=float, default=d.read_split_bytes / 2**20,
                       help="uncompressed files are read in byte ranges of this size (default %(default)s)")
    group.add_argument("--max_record_mb", type=float, default=d.max_record_bytes / 2**20,
                       help="longer records are rejected as record_too_long (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """Builds the stage's config from parsed flags.

    Raises:
        ValueError: naming the flag with a bad value.
    """
    return CorpusConfig(
        input_patterns=tuple(p.strip() for p in args.input.split(",") if p.strip()),
        output_dir=args.output_dir,
        input_format=args.input_format,
        num_shards=args.num_shards if args.num_shards is not None else DEFAULT_NUM_SHARDS,
        validation_fraction=args.validation_fraction,
        language=args.language.strip(),
        min_language_prob=args.min_language_prob,
        drop_quality_warnings=_split_list(args.drop_quality_warnings),
        min_harmful_pp=args.min_harmful_pp if args.min_harmful_pp else None,
        drop_categories=_split_list(args.drop_categories),
        min_document_chars=args.min_document_chars,
        min_devanagari_share=args.min_devanagari_share,
        dedup=not args.no_dedup,
        read_split_bytes=int(args.read_split_mb * 2**20),
        max_record_bytes=int(args.max_record_mb * 2**20),
    )


def preflight(config: CorpusConfig) -> None:
    """Checks the inputs before the pipeline starts.

    Raises:
        FileNotFoundError: for a pattern that matches nothing or a 21.09 file without metadata.
        ValueError: for a file whose format cannot be told from its name.
    """
    tasks = sources.plan_reads(config.input_patterns, input_format=config.input_format,
                               split_bytes=config.read_split_bytes)
    logger.info("corpus: %d input files, %d read tasks", len({t.path for t in tasks}), len(tasks))


def build_pipeline(p, config: CorpusConfig):
    """Adds the corpus stage to the pipeline ``p``; returns the PCollection of written paths."""
    records, malformed = p | "ReadCorpus" >> transforms.ReadCorpus(
        config.input_patterns, input_format=config.input_format, split_bytes=config.read_split_bytes,
        max_record_bytes=config.max_record_bytes)
    docs, dropped = records | "CleanDocuments" >> transforms.CleanDocuments(config.filter_settings)
    unique, duplicates = docs | "DeduplicateDocuments" >> transforms.DeduplicateDocuments(config.dedup)
    corpus_files = unique | "WriteCorpus" >> transforms.WriteCorpus(
        config.output_dir, validation_fraction=config.validation_fraction,
        train_shards=config.train_shards, validation_shards=config.validation_shards)
    rejected_files = (
        (malformed | "MalformedToRejection" >> beam.Map(transforms.malformed_rejection), dropped, duplicates)
        | "AllRejections" >> beam.Flatten()
        | "WriteRejected" >> transforms.WriteRejected(config.output_dir, num_shards=config.num_shards)
    )
    return (corpus_files, rejected_files) | "AllFiles" >> beam.Flatten()


def counters_from_result(result) -> dict[str, int]:
    """Sums the ``corpus`` counters of a finished pipeline by name."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(transforms.NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    return totals


def make_report(config: CorpusConfig, counters: dict[str, int]) -> dict:
    """The content of ``reports/corpus.json`` from the stage's counters.

    Raises:
        RuntimeError: when the counts do not add up (read = malformed + kept + dropped).
    """
    malformed = {k[len("malformed_"):]: v for k, v in sorted(counters.items()) if k.startswith("malformed_")}
    dropped = {reason: 0 for reason in filters.DROP_REASONS}
    dropped.update({k[len("dropped_"):]: v for k, v in counters.items() if k.startswith("dropped_")})
    report = {
        "stage": "corpus",
        "records_read": counters.get("records_read", 0),
        "records_malformed": sum(malformed.values()),
        "records_malformed_by_reason": malformed,
        "documents_kept": counters.get("documents_kept", 0),
        "documents_dropped": dict(sorted(dropped.items())),
        "input": {"patterns": list(config.input_patterns), "files": counters.get("input_files", 0),
                  "bytes": counters.get("input_bytes", 0)},
        "splits": {},
        "rejected": {"num_files": config.num_shards,
                     "file_pattern": f"rejected/rejected-*-of-{config.num_shards:05d}.jsonl.gz"},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
    }
    for split, count in (("train", config.train_shards), ("validation", config.validation_shards)):
        report["splits"][split] = {
            "documents": counters.get(f"{split}_documents", 0),
            "sentences": counters.get(f"{split}_sentences", 0),
            "num_files": count,
            "file_pattern": f"corpus/{split}-*-of-{count:05d}.txt.gz",
        }
    accounted = report["records_malformed"] + report["documents_kept"] + sum(dropped.values())
    if accounted != report["records_read"]:
        raise RuntimeError(f"corpus counts do not add up: records_read={report['records_read']} but malformed + "
                           f"kept + dropped = {accounted} ({report})")
    return report


def finalize(config: CorpusConfig, result) -> dict:
    """Checks that every output file exists, then writes ``reports/corpus.json`` (atomically).

    Returns:
        The report.
    """
    expected = list(transforms.corpus_paths(config.output_dir, train_shards=config.train_shards,
                                            validation_shards=config.validation_shards).values())
    expected += list(transforms.rejected_paths(config.output_dir, num_shards=config.num_shards).values())
    missing = [p for p in expected if not io_utils.exists(p)]
    if missing:
        raise RuntimeError(f"corpus stage finished but {len(missing)} output file(s) are missing: {missing[:5]}")
    report = make_report(config, counters_from_result(result))
    stale = []
    for pattern in ("corpus/train-*.txt.gz", "corpus/validation-*.txt.gz", "rejected/rejected-*.jsonl.gz"):
        stale += io_utils.remove_stale_files(io_utils.join(config.output_dir, pattern), expected)
    if stale:
        logger.info("corpus: removed %d file(s) of an earlier run with other shard counts", len(stale))
    report["stale_files_removed"] = stale
    io_utils.write_json_atomic(io_utils.join(config.output_dir, "reports", REPORT), report)
    logger.info("corpus: read %d records, kept %d documents, dropped %s, malformed %d",
                report["records_read"], report["documents_kept"],
                {k: v for k, v in report["documents_dropped"].items() if v}, report["records_malformed"])
    return report
