"""trainer.task --init_from_hf: start from a Hugging Face BERT folder."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import pytest

from tests.trainer import hf_reference
from tests.trainer.fixtures import write_pretraining_data
from trainer import task
from trainer.config import BertConfig
from trainer.export import build_model_from_export

pytest.importorskip(
    "trainer.hf_weights", reason="trainer/hf_weights.py (the HF weight map) is not in this tree"
)


def _hf_dir(tmp_path, vocab_size: int) -> tuple[str, object, BertConfig]:
    config = BertConfig.from_preset("tiny", vocab_size=vocab_size, max_position_embeddings=64)
    hf = hf_reference.hf_model(config)
    path = str(tmp_path / "hf")
    hf.save_pretrained(path)
    return path, hf, config


def test_import_and_export_without_training(tmp_path, caplog):
    hf_dir, hf, config = _hf_dir(tmp_path, vocab_size=60)
    model_dir = tmp_path / "model"
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert task.main(["--init_from_hf", hf_dir, "--model_dir", str(model_dir), "--train_steps", "0"]) == 0
    assert "init_from_hf: " in caplog.text

    model = build_model_from_export(str(model_dir / "export"))
    assert model.config == config
    inputs = hf_reference.random_inputs(config)
    ours = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs).items()}
    ref = hf_reference.hf_outputs(hf, inputs)
    np.testing.assert_allclose(ours["mlm_logits"], ref["mlm_logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["nsp_logits"], ref["nsp_logits"], atol=1e-5, rtol=0)
    assert not os.path.exists(model_dir / "checkpoints")


def test_import_then_train_and_refuse_another_vocabulary(tmp_path, caplog):
    data = write_pretraining_data(str(tmp_path / "data"), num_train=32, num_eval=16)  # vocab 60
    hf_dir, _, _ = _hf_dir(tmp_path, vocab_size=70)
    argv = [
        "--data_dir",
        data,
        "--init_from_hf",
        hf_dir,
        "--model_dir",
        str(tmp_path / "m"),
        "--train_steps",
        "2",
    ]
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main(argv) == 1
    assert "the data's vocab_size=60 differs from the model's vocab_size=70" in caplog.text

    hf_dir, hf, config = _hf_dir(tmp_path / "b", vocab_size=60)
    argv = [
        "--data_dir", data, "--init_from_hf", hf_dir, "--model_dir", str(tmp_path / "m2"), "--train_steps", "2",
        "--batch_size", "8", "--log_every", "1", "--checkpoint_every", "2", "--learning_rate", "1e-4",
        "--no-jit_compile",
    ]  # fmt: skip
    assert task.main(argv) == 0
    trained = build_model_from_export(str(tmp_path / "m2" / "export")).get_named_weights()
    start = hf_reference.named_weights_from_hf(hf, config)
    # Two small steps from the imported weights: close to them, but moved.
    diffs = [float(np.max(np.abs(trained[k] - start[k]))) for k in start]
    assert 0 < max(diffs) < 1e-3
