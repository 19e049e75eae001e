"""Throughput and peak memory of the pretraining stage, side by side with google-research/bert.

Builds a workspace outside the repository from the shared Hindi documents: ``corpus/``
shards at 1x and at ``--scale`` times the input (the extra copies are the same documents
with their sentences in another order, so every document is new and the statistics stay
the same), one 32k WordPiece vocabulary, and the same documents as plain text for the
reference. Then it runs, each in a child process whose peak RSS (children included) is
polled with psutil:

* the stage (``preflight``, ``build_pipeline``, ``run``, ``finalize``, as
  ``beam_pipelines.build`` runs it) with 1 and 2 DirectRunner workers;
* the reference ``create_pretraining_data.py`` (one process, TensorFlow 2 via
  ``tensorflow.compat.v1``), when ``--reference_dir`` holds it.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.pretraining_throughput \\
        --reference_dir /tmp/bert_ref --work_dir /tmp/pretraining_bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.pretraining_reference import prepare_reference, reference_log, run_reference
from tests.pretraining import helpers

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = REPO.parent / "shared" / "corpus" / "hi" / "documents"


def _measure(proc: subprocess.Popen, poll_s: float = 0.05) -> tuple[float, float]:
    """Waits for ``proc``; returns (seconds, peak RSS in GB of it and all its descendants)."""
    start = time.time()
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(poll_s)
    return time.time() - start, peak / 1e9


def _variant(docs: list[list[str]], copy: int) -> list[list[str]]:
    if copy == 0:
        return docs
    rng = random.Random(copy)
    out = []
    for doc in docs:
        d = list(doc)
        rng.shuffle(d)
        out.append(d)
    return out


def prepare(work: Path, docs_dir: Path, scales: list[int], *, num_shards: int) -> dict:
    docs = helpers.read_documents(sorted(docs_dir.glob("*.txt")))
    vocab_dir = work / "vocab_32k"
    if not (vocab_dir / "vocab" / "vocab.txt").exists():
        helpers.write_vocab(vocab_dir, docs, vocab_size=32000)
    info = {}
    for scale in scales:
        ws = work / f"x{scale}"
        text_dir = ws / "text"
        if not text_dir.exists():
            all_docs = [d for c in range(scale) for d in _variant(docs, c)]
            helpers.write_corpus(ws, all_docs, num_shards=num_shards)
            os.symlink(vocab_dir / "vocab", ws / "vocab")
            text_dir.mkdir(parents=True)
            for c in range(scale):
                (text_dir / f"part{c}.txt").write_text(
                    "".join("\n".join(d) + "\n\n" for d in _variant(docs, c)), encoding="utf-8"
                )
        size = sum(p.stat().st_size for p in text_dir.glob("*.txt"))
        info[scale] = {
            "workspace": str(ws),
            "input_bytes": size,
            "documents": sum(1 for c in range(scale) for _ in docs),
        }
    return info


def _run_stage_child(out_dir: str, workers: int, num_shards: int, dupe_factor: int) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines.pretraining import stage

    config = stage.PretrainingConfig(output_dir=out_dir, num_shards=num_shards, dupe_factor=dupe_factor)
    stage.preflight(config)
    args = (
        ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"] if workers > 1 else []
    )
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    stage.build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    metadata = stage.finalize(config, result)
    print(json.dumps({s: v["num_examples"] for s, v in metadata["splits"].items()}))


def run_ours(workspace: str, workers: int, *, num_shards: int, dupe_factor: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.pretraining_throughput",
        "--_child",
        workspace,
        str(workers),
        str(num_shards),
        str(dupe_factor),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seconds, peak = _measure(proc)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"stage failed: {err.decode()[-3000:]}")
    counts = json.loads(out.decode().strip().splitlines()[-1])
    seq = Path(workspace) / "pretraining" / "seq128"
    size = sum(p.stat().st_size for p in seq.glob("*.tfrecord"))
    return {
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak, 2),
        "instances": sum(counts.values()),
        "output_gb": round(size / 1e9, 3),
    }


def run_ref(script_dir: Path, workspace: str, *, dupe_factor: int) -> dict:
    files = sorted(str(p) for p in (Path(workspace) / "text").glob("*.txt"))
    out = str(Path(workspace) / "reference.tfrecord")
    proc = run_reference(
        script_dir,
        input_files=files,
        vocab_file=str(Path(workspace) / "vocab" / "vocab.txt"),
        output_file=out,
        dupe_factor=dupe_factor,
    )
    seconds, peak = _measure(proc)
    proc.wait()
    log = reference_log(out)
    if proc.returncode:
        raise RuntimeError(f"reference failed: {log[-3000:]}")
    found = re.findall(r"Wrote (\d+) total instances", log)
    instances = int(found[-1]) if found else None
    return {
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak, 2),
        "instances": instances,
        "output_gb": round(os.path.getsize(out) / 1e9, 3),
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--_child":
        _run_stage_child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs_dir", default=str(DEFAULT_DOCS), help="documents files (*.txt)")
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "pretraining_bench"))
    parser.add_argument(
        "--reference_dir",
        default=None,
        help="directory with google-research/bert's create_pretraining_data.py and tokenization.py",
    )
    parser.add_argument("--scale", type=int, default=4, help="the larger input, in copies of the documents")
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--num_shards", type=int, default=8, help="corpus and output shards per split")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    scales = [1, args.scale]
    info = prepare(work, Path(args.docs_dir), scales, num_shards=args.num_shards)
    rows = []
    script_dir = prepare_reference(args.reference_dir, str(work)) if args.reference_dir else None
    for scale in scales:
        ws = info[scale]["workspace"]
        mb = info[scale]["input_bytes"] / 1e6
        runs = [
            (
                f"ours, {w} worker(s)",
                lambda w=int(w), ws=ws: run_ours(ws, w, num_shards=args.num_shards, dupe_factor=args.dupe_factor),
            )
            for w in args.workers.split(",")
        ]
        if script_dir is not None:
            runs.append(
                (
                    "reference create_pretraining_data.py",
                    lambda ws=ws: run_ref(script_dir, ws, dupe_factor=args.dupe_factor),
                )
            )
        for name, fn in runs:
            r = fn()
            r.update(
                name=name,
                scale=scale,
                input_mb=round(mb, 1),
                instances_per_s=round(r["instances"] / r["seconds"]) if r["instances"] else None,
                mb_per_s=round(mb / r["seconds"], 2),
            )
            rows.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| run | input | instances | wall s | instances/s | MB/s | peak RSS GB | output GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['input_mb']} MB ({r['scale']}x) | {r['instances']:,} | {r['seconds']} | "
            f"{r['instances_per_s']:,} | {r['mb_per_s']} | {r['peak_rss_gb']} | {r['output_gb']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
