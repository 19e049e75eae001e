"""The whole chain on the bundled sample, through the three command lines (slow: minutes).

beam_pipelines.build -> trainer.task (a few steps of a tiny model) -> conversion.convert
--verify on the validation TFRecords -> conversion.fill_mask_demo, each in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _run(repo_root, *argv, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KERAS_BACKEND": "tensorflow"}
    run = subprocess.run(
        [sys.executable, "-m", *argv], cwd=repo_root, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, f"{argv[0]} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def test_sample_corpus_to_fill_mask(repo_root, tmp_path):
    out = tmp_path / "demo"
    _run(
        repo_root,
        "beam_pipelines.build",
        "--output_dir",
        str(out),
        "--vocab_size",
        "4000",
        "--dupe_factor",
        "1",
    )
    data_dir = out / "pretraining" / "seq128"
    model_dir = tmp_path / "model"
    _run(
        repo_root,
        "trainer.task",
        *("--data_dir", str(data_dir), "--model_dir", str(model_dir), "--model_size", "tiny"),
        *("--train_steps", "20", "--batch_size", "8", "--log_every", "10", "--checkpoint_every", "10"),
        *("--eval_steps", "2"),
    )
    hf_dir = tmp_path / "hf"
    printed = _run(
        repo_root,
        "conversion.convert",
        *("--model_dir", str(model_dir), "--vocab_dir", str(out / "vocab"), "--output_dir", str(hf_dir)),
        *("--verify", "--data_dir", str(data_dir), "--verify_examples", "16"),
    )
    assert f"verify: 16 examples from validation split of {data_dir}" in printed
    assert (hf_dir / "tokenizer.json").read_bytes() == (out / "vocab" / "tokenizer.json").read_bytes()
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["vocab_size"] == 4000 and config["architectures"] == ["BertForPreTraining"]
    card = (hf_dir / "README.md").read_text(encoding="utf-8")
    assert "| step | 20 |" in card and "| input: documents read |" in card

    from conversion.fill_mask_demo import SENTENCES

    lines = _run(
        repo_root, "conversion.fill_mask_demo", "--model_dir", str(hf_dir), "--top_k", "3"
    ).splitlines()
    assert lines[0] == SENTENCES[0] and len(lines) == 4 * len(SENTENCES)
