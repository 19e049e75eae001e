"""Wall time and peak memory of the vocab stage against the seed's method, on the same input.

Builds corpus-format input (``train-SSSSS-of-NNNNN.txt.gz``) from the shared corpus' ``documents/``
files (``--copies K`` adds K-1 copies whose sentences are reshuffled into new documents), then runs,
each in its own process, with peak RSS summed over the process and all its children:

- ``seed``: ``BertWordPieceTokenizer(lowercase=False, strip_accents=False).train(text files,
  min_frequency=2)``, the seed's method;
- ``stage_1``: the vocab stage on Beam's DirectRunner, in process (one worker);
- ``stage_2``: the same with ``--direct_running_mode=multi_processing --direct_num_workers=2``;
- ``count_beam`` / ``count_tft``: word counting only, Beam's ``CountWords`` against
  tensorflow-transform's ``tft.vocabulary`` (frequencies kept, same min count), on the same
  pre-tokenized lines (``--skip_tft`` leaves these out).

Run::

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.vocab_stage --copies 1 --min_count 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "hi"


def _documents(corpus: Path) -> list[list[str]]:
    docs = []
    for path in sorted((corpus / "documents").glob("*.txt")):
        for block in path.read_text(encoding="utf-8").split("\n\n"):
            lines = [line for line in block.split("\n") if line.strip()]
            if lines:
                docs.append(lines)
    return docs


def make_input(corpus: Path, work: Path, *, copies: int, num_files: int) -> dict[str, object]:
    """Writes the gzip corpus shards and the same text as plain files (for the seed)."""
    docs = _documents(corpus)
    rng = random.Random(12345)
    all_docs = list(docs)
    for _ in range(copies - 1):
        sentences = [line for doc in docs for line in doc]
        rng.shuffle(sentences)
        sizes = [len(d) for d in docs]
        start = 0
        for size in sizes:
            all_docs.append(sentences[start : start + size])
            start += size
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "text").mkdir(parents=True, exist_ok=True)
    nbytes = 0
    for i in range(num_files):
        text = "".join("\n".join(doc) + "\n\n" for doc in all_docs[i::num_files])
        nbytes += len(text.encode("utf-8"))
        with gzip.open(
            work / "corpus" / f"train-{i:05d}-of-{num_files:05d}.txt.gz", "wt", encoding="utf-8"
        ) as f:
            f.write(text)
        (work / "text" / f"train-{i:05d}.txt").write_text(text, encoding="utf-8")
    return {
        "documents": len(all_docs),
        "lines": sum(len(d) for d in all_docs),
        "bytes": nbytes,
        "files": num_files,
    }


def measure(cmd: list[str]) -> dict[str, object]:
    """Runs ``cmd``; returns wall seconds, peak RSS (GB) of it and its children, and its JSON output."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = {"wall_s": round(wall, 1), "peak_rss_gb": round(peak / 1e9, 2), "returncode": proc.returncode}
    if lines:
        result.update(json.loads(lines[-1]))
    if proc.returncode != 0 and not lines:
        result["error"] = err.strip().splitlines()[-1] if err.strip() else "no output"
    return result


# ----------------------------------------------------------------------------------------------
# Children: each prints one JSON line.


def _child_seed(work: Path, vocab_size: int) -> dict[str, object]:
    from tokenizers import BertWordPieceTokenizer

    seed = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    seed.train(
        sorted(str(p) for p in (work / "text").glob("*.txt")),
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
    )
    return {"vocab_size": seed.get_vocab_size()}


def _child_stage(work: Path, out: Path, vocab_size: int, min_count: int, workers: int) -> dict[str, object]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines import build
    from beam_pipelines.vocab import stage

    args, _ = build.make_parser().parse_known_args(
        [
            "--stages",
            "vocab",
            "--output_dir",
            str(out),
            "--vocab_input",
            str(work / "corpus" / "train-*.txt.gz"),
            "--vocab_size",
            str(vocab_size),
            "--min_count",
            str(min_count),
        ]
    )
    config = stage.config_from_args(args)
    stage.preflight(config)
    beam_args = (
        [] if workers == 1 else ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    )
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    stage.build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    report = stage.finalize(config, result)
    return {
        "vocab_size": report["vocab_size"],
        "distinct_words_kept": report["counts"]["distinct_words_kept"],
    }


def _pretokenized_file(work: Path) -> str:
    """Writes the input's words, one line per input line, space-separated (not timed)."""
    from beam_pipelines.vocab.tokenizer_spec import WordSplitter

    path = work / "pretokenized.txt"
    if not path.exists():
        splitter = WordSplitter()
        with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as out:
            for text in sorted((work / "text").glob("*.txt")):
                for line in text.read_text(encoding="utf-8").splitlines():
                    if line:
                        out.write(" ".join(splitter.split(line)) + "\n")
        path.with_suffix(".tmp").rename(path)
    return str(path)


def _child_count_beam(work: Path, min_count: int) -> dict[str, object]:
    import apache_beam as beam

    from beam_pipelines.vocab import transforms

    path = _pretokenized_file(work)
    start = time.perf_counter()
    with beam.Pipeline() as p:
        counted = p | beam.io.ReadFromText(path) | transforms.CountWords(min_count=min_count)
        _ = (
            counted
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n: (work / "count_beam.txt").write_text(str(n)))
        )
    return {
        "count_s": round(time.perf_counter() - start, 1),
        "words": int((work / "count_beam.txt").read_text()),
    }


def _child_count_tft(work: Path, min_count: int) -> dict[str, object]:
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    path = _pretokenized_file(work)
    start = time.perf_counter()

    def preprocessing_fn(inputs):
        words = tf.strings.split(inputs["text"])  # whitespace: the lines are pre-tokenized
        tft.vocabulary(words, frequency_threshold=min_count, store_frequency=True, vocab_filename="words")
        return {"text": inputs["text"]}

    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec({"text": tf.io.FixedLenFeature([], tf.string)})
    )
    import apache_beam as beam

    with beam.Pipeline() as p, tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=work)):
        data = p | beam.io.ReadFromText(path) | beam.Map(lambda line: {"text": line})
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(work / "tft_out"))
    vocab = tft.TFTransformOutput(str(work / "tft_out")).vocabulary_file_by_name("words")
    with open(vocab, "rb") as f:
        words = sum(1 for _ in f)
    result = {"count_s": round(time.perf_counter() - start, 1), "words": words}
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    # tft leaves threads that crash the interpreter at exit (REFERENCE.md); leave at once.
    import os

    os._exit(0)


def _child(argv: list[str]) -> int:
    kind, work = argv[0], Path(argv[1])
    if kind == "seed":
        result = _child_seed(work, int(argv[2]))
    elif kind == "stage":
        result = _child_stage(work, Path(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]))
    elif kind == "count_beam":
        result = _child_count_beam(work, int(argv[2]))
    elif kind == "count_tft":
        result = _child_count_tft(work, int(argv[2]))
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--work_dir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--copies", type=int, default=1, help="input = the documents files times this")
    parser.add_argument("--num_files", type=int, default=8)
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--min_count", type=int, default=1)
    parser.add_argument("--skip_tft", action="store_true")
    parser.add_argument("--only", default="seed,stage_1,stage_2,count_beam,count_tft")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vocab_bench_"))
    results: dict[str, object] = {
        "input": make_input(args.corpus, work, copies=args.copies, num_files=args.num_files)
    }
    results["vocab_size"], results["min_count"] = args.vocab_size, args.min_count
    me = [sys.executable, "-m", "benchmarks.vocab_stage", "--child"]
    runs = {
        "seed": me + ["seed", str(work), str(args.vocab_size)],
        "stage_1": me
        + ["stage", str(work), str(work / "out1"), str(args.vocab_size), str(args.min_count), "1"],
        "stage_2": me
        + ["stage", str(work), str(work / "out2"), str(args.vocab_size), str(args.min_count), "2"],
        "count_beam": me + ["count_beam", str(work), str(args.min_count)],
        "count_tft": me + ["count_tft", str(work), str(args.min_count)],
    }
    wanted = args.only.split(",")
    if args.skip_tft:
        wanted = [w for w in wanted if w != "count_tft"]
    for name in wanted:
        results[name] = measure(runs[name])
        print(name, results[name], file=sys.stderr, flush=True)
    if all((work / d / "vocab" / "vocab.txt").exists() for d in ("out1", "out2")):
        results["stage_1_equals_stage_2"] = all(
            (work / "out1" / "vocab" / f).read_bytes() == (work / "out2" / "vocab" / f).read_bytes()
            for f in ("vocab.txt", "tokenizer.json")
        )
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
