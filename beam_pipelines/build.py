"""Build BERT pretraining data from raw OSCAR text with Apache Beam.

Runs the stages ``corpus`` (read, clean, filter, deduplicate, segment, shard),
``vocab`` (count words, learn a WordPiece vocabulary) and ``pretraining``
(masked-LM/NSP TFRecords) in that order; ``--stages`` picks a subset. Every flag
this module does not know is handed to Beam, so any runner works.

Local, on the sample corpus bundled with the package::

    python -m beam_pipelines.build --output_dir /tmp/hi_bert

Local, two worker processes::

    python -m beam_pipelines.build --input 'data/hi_meta_part_*.jsonl.zst' \\
        --output_dir /tmp/hi_bert \\
        --direct_running_mode=multi_processing --direct_num_workers=2

Google Cloud Dataflow::

    python -m beam_pipelines.build --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://B/tmp --setup_file=./setup.py \\
        --input='gs://B/oscar/hi_meta_part_*.jsonl.zst' --output_dir=gs://B/out

Each stage runs as its own pipeline (one Dataflow job each): the vocabulary must
be complete before any text is tokenized, and the files between stages are the
checkpoints a user can inspect or reuse.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

STAGE_ORDER = ("corpus", "vocab", "pretraining")
_STAGE_MODULES = {name: f"beam_pipelines.{name}.stage" for name in STAGE_ORDER}

logger = logging.getLogger("beam_pipelines.build")


def _stage_module(name: str):
    return importlib.import_module(_STAGE_MODULES[name])


def parse_stages(value: str) -> list[str]:
    """Parses ``--stages`` into a list in pipeline order.

    Raises:
        ValueError: for an unknown or empty stage name.
    """
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise ValueError("--stages is empty; choose from " + ",".join(STAGE_ORDER))
    unknown = [s for s in names if s not in STAGE_ORDER]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown}; choose from {','.join(STAGE_ORDER)}")
    return [s for s in STAGE_ORDER if s in names]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.build",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other flag (--runner, --project, --direct_num_workers, ...) goes to Beam.",
    )
    common = parser.add_argument_group("common")
    common.add_argument("--stages", default=",".join(STAGE_ORDER),
                        help="comma-separated subset of %(default)s")
    common.add_argument("--output_dir", required=True, help="local directory or gs:// prefix")
    common.add_argument("--seed", type=int, default=12345, help="seed for every random choice")
    common.add_argument("--num_shards", type=int, default=None,
                        help="output shards per split (default: chosen by each stage)")
    for name in STAGE_ORDER:
        module = _stage_module(name)
        module.add_arguments(parser.add_argument_group(name))
    return parser


def run(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Parses flags, checks every stage's configuration, then runs the stages in order.

    Returns:
        The per-stage results returned by each stage's ``finalize``.
    """
    parser = make_parser()
    args, beam_args = parser.parse_known_args(argv)
    try:
        stages = parse_stages(args.stages)
        if args.num_shards is not None and args.num_shards < 1:
            raise ValueError(f"--num_shards must be >= 1, got {args.num_shards}")
        configs = {name: _stage_module(name).config_from_args(args) for name in stages}
    except ValueError as e:
        parser.error(str(e))

    import apache_beam as beam
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        StandardOptions,
        TestOptions,
    )

    base_options = PipelineOptions(list(beam_args))
    dry_run = bool(base_options.view_as(TestOptions).dry_run)
    runner = str(base_options.view_as(StandardOptions).runner or "")
    if "dataflow" in runner.lower():
        # Dataflow workers cannot see the launching machine's files.
        local = [
            f"--{flag} {value}"
            for flag in ("output_dir", "input", "vocab_input")
            for value in str(getattr(args, flag, None) or "").split(",")
            if value and not value.startswith("gs://")
        ]
        if local:
            parser.error("with the DataflowRunner every path must be gs://; local: " + ", ".join(local))
    job_name = base_options.view_as(GoogleCloudOptions).job_name
    results: dict[str, object] = {}
    for name in stages:
        module = _stage_module(name)
        config = configs[name]
        if dry_run:
            # A dry run only builds each job graph: no input is read and nothing is written,
            # so the checks on files and the reports that read metrics are skipped.
            pipeline = beam.Pipeline(options=_stage_options(beam_args, job_name, name))
            module.build_pipeline(pipeline, config)
            results[name] = pipeline.run()
            logger.info("stage %s: job graph built (dry run)", name)
            continue
        module.preflight(config)
        start = time.time()
        logger.info("stage %s: starting", name)
        pipeline = beam.Pipeline(options=_stage_options(beam_args, job_name, name))
        module.build_pipeline(pipeline, config)
        result = pipeline.run()
        result.wait_until_finish()
        results[name] = module.finalize(config, result)
        logger.info("stage %s: done in %.1f s", name, time.time() - start)
    return results


def _stage_options(beam_args: Sequence[str], job_name: str | None, stage: str):
    """Beam options for one stage; a user's ``--job_name`` gets the stage as a suffix."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    options = PipelineOptions(list(beam_args))
    if job_name:
        options.view_as(GoogleCloudOptions).job_name = f"{job_name}-{stage}"
    return options


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(argv if argv is not None else sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
