"""Throughput (MB/s of input) and peak memory of the corpus stage.

Recombines the shared Hindi corpus into OSCAR 23.01 files (zstd JSON lines, under /tmp,
never committed) of the requested sizes, then runs on each:

- ``baseline``: the same reading, cleaning, dedup and writing as plain Python in one
  process, no Beam (the stage's pure modules in a loop; dedup by a dict in memory);
- ``beam xN``: the corpus stage on Beam's DirectRunner,
  ``--direct_running_mode=multi_processing --direct_num_workers=N``.

Each run is a separate process; peak RSS is sampled every 0.1 s over the process and all
of its children (psutil). Run it under the benchmark lock::

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.corpus_throughput --sizes_mb 25,100 --workers 1,2

Input size is the uncompressed JSON-lines size (what OSCAR's tables call the size).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HINDI_BERT_SHARED_CORPUS", REPO.parent / "shared" / "corpus" / "hi"))
PART_BYTES = 32 << 20


def _load_paragraph_runs() -> list[list[str]]:
    """Blocks of consecutive non-empty lines of the shared corpus (documents/ and sentences/)."""
    blocks: list[list[str]] = []
    for sub in ("documents", "sentences"):
        for path in sorted((SHARED / sub).glob("*.txt")):
            lines = [x.strip() for x in path.read_text("utf-8").splitlines() if x.strip()]
            blocks.append(lines)
    return blocks


def make_input(folder: Path, size_bytes: int, *, seed: int = 2301) -> dict:
    """Writes OSCAR 23.01 files totalling ``size_bytes`` of JSON lines into ``folder``.

    Documents are runs of 3 to 40 consecutive lines of a random shared file; 5 % are exact
    copies of an earlier document (so dedup has work).
    """
    rng = random.Random(seed)
    blocks = _load_paragraph_runs()
    folder.mkdir(parents=True, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=3)
    written = 0
    docs = 0
    part = 0
    recent: list[str] = []
    while written < size_bytes:
        part += 1
        buf = bytearray()
        while len(buf) < PART_BYTES and written + len(buf) < size_bytes:
            if recent and rng.random() < 0.05:
                content = rng.choice(recent)
            else:
                block = rng.choice(blocks)
                n = rng.randint(3, 40)
                start = rng.randrange(max(1, len(block) - n))
                content = "\n".join(block[start : start + n])
                recent = (recent + [content])[-1000:]
            meta = {
                "identification": {"label": "hi", "prob": round(rng.uniform(0.85, 1.0), 6)},
                "harmful_pp": round(rng.uniform(100, 5000), 3),
                "tlsh": "tlsh:T1" + f"{rng.getrandbits(552):0138X}",
                "quality_warnings": None,
                "categories": None,
                "sentence_identifications": [
                    {"label": "hi", "prob": round(rng.uniform(0.8, 1), 6)} for _ in content.split("\n")
                ],
            }
            rec = {
                "content": content,
                "warc_headers": {"warc-type": "conversion", "content-length": str(len(content.encode()))},
                "metadata": meta,
            }
            buf += json.dumps(rec, ensure_ascii=False).encode() + b"\n"
            docs += 1
        (folder / f"hi_meta_part_{part}.jsonl.zst").write_bytes(cctx.compress(bytes(buf)))
        written += len(buf)
    compressed = sum(p.stat().st_size for p in folder.glob("*.jsonl.zst"))
    return {"json_bytes": written, "zstd_bytes": compressed, "documents": docs, "files": part}


def _peak_rss_run(cmd: list[str]) -> tuple[float, float, int, str]:
    """Runs ``cmd``; returns (wall seconds, CPU seconds, peak RSS in bytes of the process tree, output tail).

    CPU seconds (user + system of the process and every descendant it waited for) say more
    than wall time on a machine shared with other jobs.
    """
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    out_chunks: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            total = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = "".join(out_chunks)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, cpu, peak, output[-2000:]


def run_stage_main(argv: list[str]) -> None:
    """Runs the corpus stage as ``beam_pipelines.build --stages corpus`` does (child process)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines.corpus import stage

    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_shards", type=int, default=None)
    stage.add_arguments(parser.add_argument_group("corpus"))
    args, beam_args = parser.parse_known_args(argv)
    config = stage.config_from_args(args)
    stage.preflight(config)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    stage.build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    report = stage.finalize(config, result)
    print(json.dumps({k: report[k] for k in ("records_read", "documents_kept", "documents_dropped")}))


def baseline_main(argv: list[str]) -> None:
    """The same work as plain Python in one process (child process)."""
    from beam_pipelines.corpus import clean, readers
    from beam_pipelines.corpus.stage import CorpusConfig

    input_glob, out = argv
    config = CorpusConfig(input_patterns=(input_glob,), output_dir=out)
    settings = config.filter_settings
    kept: dict[bytes, tuple[tuple[str, int], str]] = {}
    read = dropped = 0
    for path in sorted(Path(input_glob).parent.glob(Path(input_glob).name)):
        with open(path, "rb") as raw:
            lines = readers.iter_lines(
                readers.open_decompressed(raw, "zstd"), max_line_bytes=config.max_record_bytes
            )
            for rec in readers.read_json_records(
                lines, source=str(path), max_record_bytes=config.max_record_bytes
            ):
                read += 1
                reason, sentences = clean.clean_record(rec, settings)
                if reason:
                    dropped += 1
                    continue
                text = "\n".join(sentences)
                key = clean.document_key(text)
                loc = (rec.source, rec.offset)
                if key not in kept or loc < kept[key][0]:
                    kept[key] = (loc, text)
    shards: dict[tuple[str, int], list] = {}
    for key, (_, text) in kept.items():
        split_shard = clean.split_and_shard(
            key,
            validation_fraction=config.validation_fraction,
            train_shards=config.train_shards,
            validation_shards=config.validation_shards,
        )
        shards.setdefault(split_shard, []).append((key, text))
    os.makedirs(f"{out}/corpus", exist_ok=True)
    for (split, shard), docs in shards.items():
        with gzip.GzipFile(f"{out}/corpus/{split}-{shard:05d}.txt.gz", "wb", mtime=0, compresslevel=4) as gz:
            for _, text in sorted(docs):
                gz.write((text + "\n\n").encode())
    print(json.dumps({"records_read": read, "documents_kept": len(kept), "dropped": dropped}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes_mb", default="25,100", help="input sizes in MB of JSON lines")
    parser.add_argument("--workers", default="1,2", help="Beam multi_processing worker counts")
    parser.add_argument("--work_dir", default="/tmp/corpus_bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated input and outputs")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    rows = []
    for size_mb in [float(s) for s in args.sizes_mb.split(",")]:
        folder = work / f"input_{size_mb:g}mb"
        if folder.exists():
            shutil.rmtree(folder)
        info = make_input(folder, int(size_mb * 2**20))
        mb = info["json_bytes"] / 2**20
        print(f"input {size_mb:g} MB: {info}; load average {os.getloadavg()}", flush=True)
        pattern = str(folder / "*.jsonl.zst")
        runs = [
            (
                "baseline (plain Python, 1 process)",
                [
                    sys.executable,
                    "-m",
                    "benchmarks.corpus_throughput",
                    "--_baseline",
                    pattern,
                    str(work / "out_base"),
                ],
            )
        ]
        for n in [int(w) for w in args.workers.split(",")]:
            runs.append(
                (
                    f"beam multi_processing x{n}",
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.corpus_throughput",
                        "--_stage",
                        "--input",
                        pattern,
                        "--output_dir",
                        str(work / f"out_{n}"),
                        "--direct_running_mode=multi_processing",
                        f"--direct_num_workers={n}",
                    ],
                )
            )
        for name, cmd in runs:
            seconds, cpu, peak, tail = _peak_rss_run(cmd)
            row = {
                "input_mb": round(mb, 1),
                "documents": info["documents"],
                "zstd_mb": round(info["zstd_bytes"] / 2**20, 1),
                "run": name,
                "seconds": round(seconds, 1),
                "mb_per_s": round(mb / seconds, 2),
                "cpu_seconds": round(cpu, 1),
                "mb_per_cpu_s": round(mb / cpu, 2),
                "peak_rss_gb": round(peak / 2**30, 2),
                "result": tail.strip().splitlines()[-1],
            }
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| input (MB JSONL) | docs | run | wall s | MB/s | CPU s | MB per CPU s | peak RSS (GB) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['input_mb']} | {r['documents']} | {r['run']} | {r['seconds']} | {r['mb_per_s']} | "
              f"{r['cpu_seconds']} | {r['mb_per_cpu_s']} | {r['peak_rss_gb']} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_stage":
        run_stage_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--_baseline":
        baseline_main(sys.argv[2:])
    else:
        sys.exit(main())
