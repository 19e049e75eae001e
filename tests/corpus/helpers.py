"""Helpers for the corpus stage's tests: run the stage the way the driver does, make input files."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.corpus import stage

BASE = "यह एक साधारण हिन्दी वाक्य है जिसमें कई शब्द हैं। दूसरा वाक्य भी उतना ही साधारण है।\nतीसरी पंक्ति में और भी शब्द हैं।"


def parse_corpus_args(argv: list[str]) -> stage.CorpusConfig:
    """Parses the corpus flags plus the driver's common ones into a config."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--num_shards", type=int, default=None)
    stage.add_arguments(parser.add_argument_group("corpus"))
    return stage.config_from_args(parser.parse_args(argv))


def run_corpus(argv: list[str], beam_args: tuple[str, ...] = ()) -> tuple[stage.CorpusConfig, dict]:
    """Runs the corpus stage like ``beam_pipelines.build`` does; returns its config and report."""
    config = parse_corpus_args(argv)
    stage.preflight(config)
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    stage.build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return config, stage.finalize(config, result)


def hindi_doc(i: int) -> str:
    return f"दस्तावेज़ संख्या {i} यहाँ है। " + BASE


def record(content: str, lang: str = "hi", prob: float = 0.97, warnings=None) -> bytes:
    meta = {"identification": {"label": lang, "prob": prob}, "harmful_pp": 900.0, "quality_warnings": warnings,
            "categories": None, "tlsh": None, "sentence_identifications": []}
    return json.dumps({"content": content, "warc_headers": {}, "metadata": meta}, ensure_ascii=False).encode()


def read_outputs(out: Path) -> dict[str, bytes]:
    """Every file under corpus/ and rejected/, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("corpus", "rejected")
            for p in sorted((out / sub).iterdir())}


def rejected_entries(out: Path) -> list[dict]:
    entries = []
    for p in sorted((out / "rejected").iterdir()):
        entries += [json.loads(line) for line in gzip.decompress(p.read_bytes()).decode().splitlines()]
    return entries


def zlib_complete_lines(packed: bytes) -> int:
    import zlib
    return zlib.decompressobj(wbits=31).decompress(packed).count(b"\n")
