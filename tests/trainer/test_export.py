"""The trainer's export: files, round trip, refusal of incomplete exports."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.trainer import hf_reference
from trainer import export
from trainer.bert_model import BertPretrainingModel
from trainer.config import BertConfig

CONFIG = BertConfig.from_preset(
    "tiny", vocab_size=61, max_position_embeddings=32, hidden_act="gelu_new", use_nsp=False
)


def test_export_round_trip(tmp_path):
    model = BertPretrainingModel(CONFIG)
    state = {
        "step": 7,
        "examples_seen": 224,
        "train_metrics": {"loss": np.float32(3.5)},
        "data_metadata": None,
    }
    export.export_model(model, CONFIG, str(tmp_path / "export"), state)

    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "bert_config.json",
        "model.safetensors",
        "training_state.json",
    ]
    raw = json.loads((tmp_path / "export" / "bert_config.json").read_text())
    assert raw["hidden_act"] == "gelu_new" and raw["use_nsp"] is False and raw["layer_norm_eps"] == 1e-12

    config, weights, loaded_state = export.load_export(str(tmp_path / "export"))
    assert config == CONFIG
    assert loaded_state == {
        "step": 7,
        "examples_seen": 224,
        "train_metrics": {"loss": 3.5},
        "data_metadata": None,
    }
    expected = model.get_named_weights()
    assert set(weights) == set(expected)
    for name, value in expected.items():
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], value)

    rebuilt = export.build_model_from_export(str(tmp_path / "export"))
    inputs = hf_reference.random_inputs(CONFIG)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(rebuilt(inputs)["mlm_logits"]),
        keras.ops.convert_to_numpy(model(inputs)["mlm_logits"]),
    )


def test_incomplete_export_is_refused(tmp_path):
    export.export_model(BertPretrainingModel(CONFIG), CONFIG, str(tmp_path), {"step": 0})
    (tmp_path / "training_state.json").unlink()
    with pytest.raises(FileNotFoundError, match="training_state.json not found"):
        export.load_export(str(tmp_path))


def test_export_refuses_a_config_that_is_not_the_models(tmp_path):
    other = BertConfig.from_dict({**CONFIG.to_dict(), "use_nsp": True})
    with pytest.raises(ValueError, match="differs from the config to export"):
        export.export_model(BertPretrainingModel(CONFIG), other, str(tmp_path), {"step": 0})
