"""trainer.task --init_from_export: start a new run from a trainer export, e.g. BERT's second
phase at a longer sequence length after the first one at 128."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests.trainer.fixtures import write_pretraining_data
from trainer import task
from trainer.export import load_export

TINY = ["--model_size", "tiny", "--max_position_embeddings", "64"]
COMMON = ["--batch_size", "8", "--log_every", "2", "--warmup_steps", "0", "--eval_steps", "1"]


@pytest.fixture(scope="module")
def phase_one(tmp_path_factory) -> str:
    """A tiny model trained 4 steps on sequences of 32 tokens; returns its model dir."""
    root = tmp_path_factory.mktemp("phase1")
    data = write_pretraining_data(str(root / "seq32"), seq_len=32, num_train=64, num_eval=16)
    model_dir = str(root / "model")
    argv = ["--data_dir", data, "--model_dir", model_dir, *TINY, *COMMON, "--train_steps", "4"]
    assert task.main(argv) == 0
    return model_dir


def test_second_phase_starts_from_the_export_on_longer_sequences(phase_one, tmp_path, caplog):
    config, weights, state = load_export(f"{phase_one}/export")
    assert state["step"] == 4
    data = write_pretraining_data(str(tmp_path / "seq64"), seq_len=64, num_pred=10, num_train=64, num_eval=16)

    # --train_steps 0: imports and exports, so the new export holds exactly the old weights.
    copy_dir = str(tmp_path / "copy")
    with caplog.at_level(logging.INFO, logger="trainer"):
        argv = ["--data_dir", data, "--init_from_export", f"{phase_one}/export", "--model_dir", copy_dir]
        assert task.main([*argv, "--train_steps", "0"]) == 0
    assert f"init_from_export: {phase_one}/export, step 4" in caplog.text
    copied_config, copied, copied_state = load_export(f"{copy_dir}/export")
    assert copied_config == config and copied_state["step"] == 0
    assert sorted(copied) == sorted(weights)
    for name in weights:
        np.testing.assert_array_equal(copied[name], weights[name], err_msg=name)

    # Phase two: 2 steps on 64-token sequences, from the phase-one weights.
    phase_two = str(tmp_path / "phase2")
    argv = ["--data_dir", data, "--init_from_export", f"{phase_one}/export", "--model_dir", phase_two]
    assert task.main([*argv, *COMMON, "--train_steps", "2", "--learning_rate", "1e-4"]) == 0
    _, trained, trained_state = load_export(f"{phase_two}/export")
    assert trained_state["step"] == 2
    diffs = [float(np.max(np.abs(trained[k] - weights[k]))) for k in weights]
    assert 0 < max(diffs) < 1e-3  # moved, but from the imported weights
    with open(f"{phase_two}/bert_config.json") as f:
        assert json.load(f) == config.to_dict()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num_layers", "4"], "--init_from_export takes the model size from"),
        (["--init_from_hf", "/nonexistent"], "give --init_from_hf or --init_from_export, not both"),
        (["--vocab_size", "70"], "--vocab_size=70 differs from vocab_size=60 of"),
    ],
)
def test_conflicting_flags_are_refused(phase_one, tmp_path, caplog, extra, message):
    argv = [
        "--init_from_export",
        f"{phase_one}/export",
        "--model_dir",
        str(tmp_path / "m"),
        "--train_steps",
        "1",
        "--synthetic_data",
    ]
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main([*argv, *extra]) == 1
    assert message in caplog.text
    assert not (tmp_path / "m" / "checkpoints").exists()


def test_a_model_dir_instead_of_its_export_is_named(phase_one, tmp_path, caplog):
    argv = ["--init_from_export", phase_one, "--model_dir", str(tmp_path / "m"), "--train_steps", "0"]
    with caplog.at_level(logging.ERROR, logger="trainer"):
        assert task.main(argv) == 1
    assert f"{phase_one}/model.safetensors not found" in caplog.text
    assert f"did you mean {phase_one}/export?" in caplog.text
