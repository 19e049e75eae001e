"""``trainer.task`` on the JAX backend where TensorFlow cannot be imported (a GPU machine with
JAX alone): ``--synthetic_data`` trains, checkpoints, evaluates and exports; TFRecords are
refused before any work with a message that says what to install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.fixtures import write_pretraining_data
from trainer.export import load_export

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
TINY = ["--model_size", "tiny", "--max_position_embeddings", "64", "--vocab_size", "97"]


def _task(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.trainer.no_tensorflow", *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("replicas", [1, 2])
def test_synthetic_data_trains_and_exports_without_tensorflow(tmp_path, replicas):
    # With two replicas (two JAX host devices) the MFU is over both devices' peak: examples/s
    # counts the global batch.
    model_dir = tmp_path / "model"
    proc = _task(
        "--synthetic_data", "--model_dir", str(model_dir), *TINY, "--max_seq_length", "32",
        "--max_predictions_per_seq", "5", "--batch_size", "8", "--train_steps", "4", "--log_every", "2",
        "--checkpoint_every", "2", "--eval_every", "2", "--eval_steps", "2", "--warmup_steps", "0",
        "--peak_tflops", "0.5", "--cpu_replicas", str(replicas),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The progress lines' MFU: examples/s times the model's FLOPs an example over the given peak.
    from trainer import flops
    from trainer.config import BertConfig

    dims = flops.ModelDims.from_config(BertConfig.from_preset("tiny", vocab_size=97))
    per_example = flops.train_step_flops(dims, batch_size=1, seq_length=32, max_predictions=5)
    progress = re.findall(r"examples/s ([0-9.]+) \| TFLOP/s ([0-9.e+-]+) \| MFU ([0-9.e+-]+)%", out)
    peak = f"bf16 peak {0.5 * replicas:g} TFLOP/s ({replicas} x 0.5, --peak_tflops)"
    assert len(progress) == 2 and peak in out and f"{replicas} replica(s)" in out, out[-3000:]
    for rate, tflops, mfu in progress:
        want = 100 * float(rate) * per_example / (replicas * 0.5e12)
        assert float(mfu) == pytest.approx(want, rel=0.01, abs=1e-3)
        assert float(tflops) == pytest.approx(float(rate) * per_example / 1e12, rel=0.01, abs=1e-5)
    assert "TensorFlow is not installed: no TensorBoard scalars" in out
    assert "step 4 | loss" in out and "eval at step 4 | loss" in out
    assert sorted(os.listdir(model_dir / "checkpoints")) == [
        "ckpt-000000002.json",
        "ckpt-000000002.safetensors",
        "ckpt-000000004.json",
        "ckpt-000000004.safetensors",
    ]
    config, weights, state = load_export(str(model_dir / "export"))
    assert state["step"] == 4 and state["keras_backend"] == "jax"
    assert config.vocab_size == 97 and all(np.all(np.isfinite(w)) for w in weights.values())


def test_tfrecords_without_tensorflow_are_refused_before_work(tmp_path):
    data = write_pretraining_data(str(tmp_path / "data"), num_train=8, num_eval=4)
    proc = _task(
        "--data_dir", data, "--model_dir", str(tmp_path / "m"), "--model_size", "tiny", "--train_steps", "2"
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "reading TFRecords needs TensorFlow (pip install tensorflow" in proc.stdout
    assert not (tmp_path / "m" / "checkpoints").exists()


def test_numpy_synthetic_batches_have_the_contract_shapes_and_ranges():
    from trainer.data_spec import DataSpec
    from trainer.synthetic import synthetic_batches

    spec = DataSpec(
        train_pattern="", eval_pattern="", max_seq_length=16, max_predictions_per_seq=4, vocab_size=50, nsp=True,
        source="--synthetic_data",
    )  # fmt: skip
    batches = synthetic_batches(spec, batch_size=3, vocab_size=50, seed=7)
    features, labels = next(batches)
    assert {k: (v.shape, v.dtype.name) for k, v in features.items()} == {
        "input_ids": ((3, 16), "int32"),
        "input_mask": ((3, 16), "int32"),
        "segment_ids": ((3, 16), "int32"),
        "masked_lm_positions": ((3, 4), "int32"),
    }
    assert {k: (v.shape, v.dtype.name) for k, v in labels.items()} == {
        "masked_lm_ids": ((3, 4), "int32"),
        "masked_lm_weights": ((3, 4), "float32"),
        "next_sentence_labels": ((3,), "int32"),
    }
    ids, positions = features["input_ids"], features["masked_lm_positions"]
    assert ids.min() >= 5 and ids.max() < 50
    assert np.all(np.diff(positions, axis=1) > 0) and positions.min() >= 1 and positions.max() <= 15
    np.testing.assert_array_equal(labels["masked_lm_ids"], np.take_along_axis(ids, positions, axis=1))
    np.testing.assert_array_equal(features["segment_ids"][0], [0] * 8 + [1] * 8)
    assert set(np.unique(labels["next_sentence_labels"])) <= {0, 1}
    # Same seed, same batches; another stream or the next batch, others.
    again = next(synthetic_batches(spec, batch_size=3, vocab_size=50, seed=7))[0]["input_ids"]
    other = next(synthetic_batches(spec, batch_size=3, vocab_size=50, seed=7, stream=1))[0]["input_ids"]
    np.testing.assert_array_equal(again, ids)
    assert not np.array_equal(other, ids) and not np.array_equal(next(batches)[0]["input_ids"], ids)
