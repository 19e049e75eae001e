"""Replicas and backends: the same update on 1 or 2 replicas, the same model on TF and JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from tests.trainer import hf_reference
from tests.trainer.scripts import result_of
from trainer.bert_model import BertPretrainingModel
from trainer.config import BertConfig

REPO = Path(__file__).resolve().parents[2]


def test_two_tf_replicas_give_the_update_of_one():
    # MirroredStrategy over two logical CPU devices (no XLA there), global batch 8 split 4 + 4;
    # the halves hold 4 and 20 masked tokens, so a per-replica mean would differ.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.trainer.replicas_tf"], cwd=REPO, env=env, capture_output=True, text=True
    )
    result = result_of(proc)
    assert result["replicas"] == 2
    for optimizer in ("sgd", "adamw", "lamb"):
        r = result[optimizer]
        assert r["max_update"] > 1e-3, optimizer  # the step moved the weights
        assert r["max_diff"] < 1e-6, (optimizer, r)  # float32 summation order only
        assert abs(r["loss_one"] - r["loss_two"]) < 1e-5, (optimizer, r)
    # --steps_per_execution 2 on two replicas: the updates of one replica, and of one step per
    # execution, over 4 steps; evaluation over 5 different batches gives one replica's metrics,
    # and so do test_on_batch and train_on_batch.
    r = result["adamw_spe2"]
    assert r["max_update"] > 1e-3
    assert r["max_diff"] < 1e-6 and r["max_diff_spe1"] < 1e-6, r
    assert abs(r["loss_one"] - r["loss_two"]) < 1e-5, r
    assert set(r["eval_two"]) == {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"}
    for name, value in r["eval_one"].items():
        assert abs(value - r["eval_two"][name]) < 1e-5, (name, r)
    for name, value in r["on_batch_one"].items():
        assert abs(value - r["on_batch_two"][name]) < 1e-5, (name, r)
    # The 5 batches differ: their mean is not that of the fifth alone.
    assert abs(r["eval_two"]["loss"] - r["on_batch_two"]["loss"]) > 1e-3


def test_jax_backend_builds_the_same_model_and_replicates(tmp_path):
    config = BertConfig.from_preset("tiny", vocab_size=97, max_position_embeddings=64, hidden_act="gelu_new")
    model = BertPretrainingModel(config)
    inputs = hf_reference.random_inputs(config)
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs).items()}
    np.savez(tmp_path / "weights.npz", __config__=json.dumps(config.to_dict()), **model.get_named_weights())
    np.savez(tmp_path / "inputs.npz", **inputs)

    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    args = [str(tmp_path / n) for n in ("weights.npz", "inputs.npz", "out.npz")]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.trainer.jax_backend", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    result = result_of(proc)

    # Same weights, same outputs on both backends.
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(got["mlm_logits"], expected["mlm_logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["nsp_logits"], expected["nsp_logits"], atol=1e-5, rtol=0)
    # Two host devices in a DataParallel mesh: the update of one device, two AdamW steps.
    assert result["devices"] == 2
    assert result["max_update"] > 1e-3
    assert result["max_diff"] < 1e-6, result
    assert abs(result["loss_one"] - result["loss_two"]) < 1e-5, result
    # With hash dropout too: the mesh draws the masks one device draws, so the same update.
    assert result["hash_vs_no_dropout"] > 1e-4  # the masks are used
    assert result["hash_max_diff"] < 1e-6, result
    assert abs(result["hash_loss_one"] - result["hash_loss_two"]) < 1e-5, result
    # The model, its loss and optimizer ran with TensorFlow unimportable (the GPU machine has none).
    assert result["tensorflow_importable"] is False
