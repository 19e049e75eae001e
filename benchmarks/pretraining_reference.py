"""Runs google-research/bert's ``create_pretraining_data.py`` and compares it instance by instance.

The reference script is not part of this project: pass a directory holding its
``create_pretraining_data.py`` and ``tokenization.py`` (a google-research/bert checkout).
They are copied to a temporary directory and made to run under TensorFlow 2 by
importing ``tensorflow.compat.v1 as tf``; nothing is written into the repository.

The comparison feeds ``instances.create_training_instances`` the reference's own
tokenization, seed and document order, with ``reference_compatible=True`` and a random
pool of the whole vocabulary, and checks that every instance equals the reference's.

    python -m benchmarks.pretraining_reference --reference_dir /tmp/bert \\
        --vocab OUT/vocab/vocab.txt --input 'docs/*.txt'
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_FILES = ("create_pretraining_data.py", "tokenization.py")


def prepare_reference(reference_dir: str, work_dir: str) -> Path:
    """Copies the reference scripts to ``work_dir`` and patches them for TensorFlow 2."""
    out = Path(work_dir) / "bert_reference"
    out.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_FILES:
        src = Path(reference_dir) / name
        if not src.is_file():
            raise FileNotFoundError(f"{src} not found: --reference_dir must hold {REFERENCE_FILES}")
        text = src.read_text(encoding="utf-8")
        text = text.replace("import tensorflow as tf\n", "import tensorflow.compat.v1 as tf\n")
        (out / name).write_text(text, encoding="utf-8")
    return out


def run_reference(script_dir: Path, *, input_files: list[str], vocab_file: str, output_file: str,
                  max_seq_length: int = 128, max_predictions_per_seq: int = 20, masked_lm_prob: float = 0.15,
                  dupe_factor: int = 5, short_seq_prob: float = 0.1, seed: int = 12345,
                  whole_word_masking: bool = False) -> subprocess.Popen:
    """Starts the reference script as a child process (the caller waits and measures)."""
    cmd = [
        sys.executable, str(script_dir / "create_pretraining_data.py"),
        f"--input_file={','.join(input_files)}", f"--output_file={output_file}",
        f"--vocab_file={vocab_file}", "--do_lower_case=False",
        f"--max_seq_length={max_seq_length}", f"--max_predictions_per_seq={max_predictions_per_seq}",
        f"--masked_lm_prob={masked_lm_prob}", f"--dupe_factor={dupe_factor}",
        f"--short_seq_prob={short_seq_prob}", f"--random_seed={seed}",
        f"--do_whole_word_mask={whole_word_masking}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    # The log goes to a file: a pipe nobody reads until the end would fill up and block it.
    log = open(output_file + ".log", "wb")  # noqa: SIM115 (closed with the process by the caller)
    return subprocess.Popen(cmd, cwd=script_dir, env=env, stdout=subprocess.DEVNULL, stderr=log)


def reference_log(output_file: str) -> str:
    """The reference run's log (TensorFlow INFO lines), as written by ``run_reference``."""
    with open(output_file + ".log", "rb") as f:
        return f.read().decode("utf-8", "replace")


def _reference_documents(script_dir: Path, input_files: list[str], vocab_file: str) -> tuple[list, int]:
    sys.path.insert(0, str(script_dir))
    try:
        tokenization = importlib.import_module("tokenization")
    finally:
        sys.path.pop(0)
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=False)
    docs: list[list[list[int]]] = [[]]
    for path in input_files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    docs.append([])
                tokens = tokenizer.tokenize(line)
                if tokens:
                    docs[-1].append(tokenizer.convert_tokens_to_ids(tokens))
    return docs, len(tokenizer.vocab)


def compare_with_reference(script_dir: Path, *, input_files: list[str], vocab_file: str, reference_output: str,
                           max_seq_length: int = 128, max_predictions_per_seq: int = 20,
                           masked_lm_prob: float = 0.15, dupe_factor: int = 5, short_seq_prob: float = 0.1,
                           seed: int = 12345) -> dict:
    """Counts the reference's instances that ``instances.py`` reproduces exactly.

    Returns:
        ``{"reference_instances", "ours", "identical", "first_difference"}``.
    """
    import tensorflow as tf

    from beam_pipelines.pretraining.instances import create_training_instances
    from beam_pipelines.pretraining.masking import MaskingSpec

    docs, vocab_size = _reference_documents(script_dir, input_files, vocab_file)
    vocab = [line.rstrip("\n") for line in open(vocab_file, encoding="utf-8")]
    ids = {t: i for i, t in enumerate(vocab)}
    spec = MaskingSpec(masked_lm_prob=masked_lm_prob, max_predictions_per_seq=max_predictions_per_seq,
                       cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], mask_id=ids["[MASK]"],
                       random_token_ids=tuple(range(vocab_size)))
    ours = create_training_instances(docs, max_seq_length=max_seq_length, dupe_factor=dupe_factor,
                                     short_seq_prob=short_seq_prob, masking=spec, rng=random.Random(seed),
                                     reference_compatible=True)
    L, P = max_seq_length, max_predictions_per_seq
    spec_tf = {
        "input_ids": tf.io.FixedLenFeature([L], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([L], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([P], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([P], tf.int64),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    identical = 0
    n_ref = 0
    first_difference = None
    for n_ref, raw in enumerate(tf.data.TFRecordDataset(reference_output), 1):
        ex = {k: v.numpy().tolist() for k, v in tf.io.parse_single_example(raw, spec_tf).items()}
        if n_ref > len(ours):
            continue
        inst = ours[n_ref - 1]
        k = len(inst.masked_positions)
        mine = {
            "input_ids": inst.tokens + [0] * (L - len(inst.tokens)),
            "segment_ids": [0] * inst.num_segment_a + [1] * (len(inst.tokens) - inst.num_segment_a)
            + [0] * (L - len(inst.tokens)),
            "masked_lm_positions": inst.masked_positions + [0] * (P - k),
            "masked_lm_ids": inst.masked_ids + [0] * (P - k),
            "next_sentence_labels": [inst.is_random_next],
        }
        if mine == ex:
            identical += 1
        elif first_difference is None:
            first_difference = {"index": n_ref - 1,
                                "fields": sorted(f for f in mine if mine[f] != ex[f])}
    return {"reference_instances": n_ref, "ours": len(ours), "identical": identical,
            "first_difference": first_difference}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference_dir", required=True)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--input", required=True, help="glob of documents files")
    parser.add_argument("--dupe_factor", type=int, default=5)
    args = parser.parse_args(argv)
    files = sorted(glob.glob(args.input))
    with tempfile.TemporaryDirectory() as tmp:
        script_dir = prepare_reference(args.reference_dir, tmp)
        out = os.path.join(tmp, "reference.tfrecord")
        start = time.time()
        proc = run_reference(script_dir, input_files=files, vocab_file=args.vocab, output_file=out,
                             dupe_factor=args.dupe_factor)
        proc.wait()
        if proc.returncode:
            raise RuntimeError(f"reference failed: {reference_log(out)[-2000:]}")
        elapsed = time.time() - start
        result = compare_with_reference(script_dir, input_files=files, vocab_file=args.vocab,
                                        reference_output=out, dupe_factor=args.dupe_factor)
    result["reference_seconds"] = round(elapsed, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
