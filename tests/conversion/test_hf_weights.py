"""trainer.hf_weights: the name map, both directions, configs, and reading folders saved by transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conversion.helpers import TINY, random_weights
from trainer import hf_weights
from trainer.config import BertConfig

HF_TINY = {
    "architectures": ["BertForPreTraining"],
    "model_type": "bert",
    "vocab_size": 120,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
}


def test_name_map_covers_every_export_name_once():
    mapping = hf_weights.name_map(TINY.num_hidden_layers)
    assert set(mapping) == set(hf_weights.native_shapes(TINY))
    keys = [key for key, _ in mapping.values()]
    assert len(keys) == len(set(keys)) == 14 + 16 * TINY.num_hidden_layers
    transposed = sorted(name for name, (_, fn) in mapping.items() if fn is hf_weights._transpose)
    assert transposed == sorted(name for name in mapping if name.endswith("/kernel"))


def test_native_to_hf_layouts_and_tied_decoder():
    weights = random_weights(TINY)
    state = hf_weights.native_to_hf(weights, TINY)
    q = "encoder/layer_1/attention/query/kernel"
    np.testing.assert_array_equal(state["bert.encoder.layer.1.attention.self.query.weight"], weights[q].T)
    assert state["bert.encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)  # [I, H] torch layout
    assert state["cls.seq_relationship.weight"].shape == (2, 32)
    assert state["cls.predictions.decoder.weight"] is state["bert.embeddings.word_embeddings.weight"]
    assert state["cls.predictions.decoder.bias"] is state["cls.predictions.bias"]
    assert all(v.dtype == np.float32 and v.flags["C_CONTIGUOUS"] for v in state.values())


def test_hf_to_native_inverts_native_to_hf_exactly():
    weights = random_weights(TINY, seed=3)
    state = hf_weights.native_to_hf(weights, TINY)
    back, report = hf_weights.hf_to_native(state, HF_TINY)
    assert set(back) == set(weights)
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name], err_msg=name)
    assert any("ignored 2 buffer/tied key(s)" in line for line in report)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda s: s.pop("bert.encoder.layer.1.output.dense.bias"), "missing 1 key(s)", id="missing"
        ),
        pytest.param(
            lambda s: s.update(extra=np.zeros(3, np.float32)), "unexpected 1 key(s): ['extra']", id="extra"
        ),
        pytest.param(
            lambda s: s.update({"bert.pooler.dense.weight": np.zeros((32, 31), np.float32)}),
            "bert.pooler.dense.weight: expected [32, 32], got [32, 31]",
            id="shape",
        ),
        pytest.param(
            lambda s: s.pop("cls.predictions.transform.dense.bias"),
            "missing 1 key(s): ['cls.predictions.transform.dense.bias']",
            id="partial-head",
        ),
    ],
)
def test_hf_to_native_lists_what_does_not_fit(edit, expected):
    state = hf_weights.native_to_hf(random_weights(TINY), TINY)
    edit(state)
    with pytest.raises(ValueError, match="do not fit config.json") as info:
        hf_weights.hf_to_native(state, HF_TINY)
    assert expected in str(info.value)


def test_native_to_hf_lists_missing_and_misshaped_weights():
    weights = random_weights(TINY)
    del weights["nsp/bias"]
    weights["mlm/output_bias"] = np.zeros(119, np.float32)
    with pytest.raises(ValueError) as info:
        hf_weights.native_to_hf(weights, TINY)
    message = str(info.value)
    assert "missing 1 weight(s): ['nsp/bias']" in message
    assert "mlm/output_bias: expected [120], got [119]" in message


def test_missing_heads_are_initialized_as_bert_does_and_reported():
    state = hf_weights.native_to_hf(random_weights(TINY), TINY)
    # A BertModel checkpoint: no heads, no "bert." prefix.
    bare = {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.") and "pooler" not in k}
    weights, report = hf_weights.hf_to_native(bare, HF_TINY)
    np.testing.assert_array_equal(weights["mlm/transform/layer_norm/gamma"], np.ones(32, np.float32))
    np.testing.assert_array_equal(weights["mlm/output_bias"], np.zeros(120, np.float32))
    np.testing.assert_array_equal(weights["nsp/bias"], np.zeros(2, np.float32))
    kernel = weights["pooler/kernel"]
    assert np.abs(kernel).max() <= 0.04 and 0.012 < kernel.std() < 0.02  # truncated normal(0.02) at 2 sigma
    np.testing.assert_array_equal(
        weights["embeddings/word_embeddings"], state["bert.embeddings.word_embeddings.weight"]
    )
    text = "\n".join(report)
    assert "no 'bert.' prefix" in text
    for head, count in (("mlm", 5), ("nsp", 2), ("pooler", 2)):
        assert f"initialized the missing {head} head ({count} weight(s)" in text


def test_legacy_names_buffers_and_half_precision_are_accepted():
    state = hf_weights.native_to_hf(random_weights(TINY), TINY)
    legacy = {}
    for key, value in state.items():
        if "LayerNorm" in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        legacy[key] = value.astype(np.float16)
    legacy["bert.embeddings.position_ids"] = np.arange(64)[None]
    weights, report = hf_weights.hf_to_native(legacy, HF_TINY)
    np.testing.assert_array_equal(
        weights["embeddings/layer_norm/gamma"], state["bert.embeddings.LayerNorm.weight"].astype(np.float16)
    )
    assert "converted ['float16'] weights to float32" in report
    assert any(
        line.startswith("ignored 3 buffer/tied key(s): ['bert.embeddings.position_ids'") for line in report
    )


def test_untied_decoder_is_refused():
    state = hf_weights.native_to_hf(random_weights(TINY), TINY)
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(ValueError, match="untied MLM decoder is not supported"):
        hf_weights.hf_to_native(state, HF_TINY)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"hidden_act": "relu"}, "hidden_act='relu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
        ({"model_type": "roberta"}, "model_type='roberta'"),
        ({"is_decoder": True}, "is_decoder=true"),
        ({"hidden_size": None}, None),
    ],
)
def test_unsupported_configs_raise(change, expected):
    config = {**HF_TINY, **change}
    if change.get("hidden_size", 0) is None:
        del config["hidden_size"]
        expected = "missing key(s) ['hidden_size']"
    with pytest.raises(ValueError, match="unsupported Hugging Face BERT config") as info:
        hf_weights.bert_config_from_hf(config)
    assert expected in str(info.value)


def test_configs_round_trip():
    for act in ("gelu", "gelu_new"):
        config = BertConfig.from_preset(
            "tiny", vocab_size=500, hidden_act=act, use_nsp=False, layer_norm_eps=1e-7
        )
        hf = hf_weights.hf_config_from_bert_config(config, pad_token_id=0)
        assert hf["architectures"] == ["BertForPreTraining"] and hf["hidden_act"] == act
        assert BertConfig.from_dict(hf_weights.bert_config_from_hf(hf)) == config
    assert (
        hf_weights.bert_config_from_hf({**HF_TINY, "hidden_act": "gelu_pytorch_tanh"})["hidden_act"]
        == "gelu_new"
    )
    assert (
        hf_weights.bert_config_from_hf({**HF_TINY, "architectures": ["BertForMaskedLM"]})["use_nsp"] is False
    )


# --- folders saved by transformers ----------------------------------------------------------


def _hf_model(cls_name: str, act: str = "gelu"):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        **{k: v for k, v in HF_TINY.items() if k not in ("architectures", "model_type")}
    )
    config.hidden_act = act
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("cls_name", ["BertForPreTraining", "BertForMaskedLM", "BertModel"])
def test_load_hf_bert_reads_save_pretrained_folders(tmp_path, cls_name):
    from safetensors.numpy import load_file

    model = _hf_model(cls_name)
    model.save_pretrained(tmp_path)
    config, weights, report = hf_weights.load_hf_bert(str(tmp_path))
    assert config.hidden_size == 32 and config.vocab_size == 120 and config.hidden_act == "gelu"
    assert set(weights) == set(hf_weights.native_shapes(config))
    saved = load_file(str(tmp_path / "model.safetensors"))
    back = hf_weights.native_to_hf(weights, config)
    prefix = "bert." if cls_name == "BertModel" else ""
    for key, value in saved.items():
        np.testing.assert_array_equal(back[prefix + key], value, err_msg=key)
    initialized = {
        "BertForPreTraining": [],
        "BertForMaskedLM": ["nsp", "pooler"],
        "BertModel": ["mlm", "nsp"],
    }
    assert [line.split()[3] for line in report if line.startswith("initialized")] == initialized[cls_name]


def test_load_hf_bert_reads_pytorch_model_bin(tmp_path):
    import torch

    model = _hf_model("BertForPreTraining")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(HF_TINY))
    config, weights, report = hf_weights.load_hf_bert(str(tmp_path))
    np.testing.assert_array_equal(
        weights["encoder/layer_0/intermediate/kernel"],
        model.bert.encoder.layer[0].intermediate.dense.weight.detach().numpy().T,
    )
    assert "pytorch_model.bin" in report[0]


def test_load_hf_bert_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        hf_weights.load_hf_bert(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(HF_TINY))
    with pytest.raises(FileNotFoundError, match="looked for model.safetensors"):
        hf_weights.load_hf_bert(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**HF_TINY, "hidden_act": "swish"}))
    with pytest.raises(ValueError, match=r"config.json: unsupported .*hidden_act='swish'"):
        hf_weights.load_hf_bert(str(tmp_path))


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "bin"])
def test_load_hf_bert_widens_bfloat16_exactly(tmp_path, fmt):
    import torch

    model = _hf_model("BertForPreTraining").to(torch.bfloat16)
    if fmt == "bin":
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text(json.dumps(HF_TINY))
    else:
        model.save_pretrained(tmp_path, max_shard_size="20KB" if fmt == "sharded" else "1GB")
    files = sorted(p.name for p in tmp_path.iterdir())
    if fmt == "sharded":
        assert "model.safetensors.index.json" in files and len(files) > 3
    config, weights, report = hf_weights.load_hf_bert(str(tmp_path))
    expected = model.cls.predictions.transform.dense.weight.detach().float().numpy().T
    np.testing.assert_array_equal(weights["mlm/transform/kernel"], expected)
    assert all(w.dtype == np.float32 for w in weights.values())
    assert any("bfloat16 tensors widened to float32 (exact)" in line for line in report)


def test_importing_hf_weights_and_the_converter_loads_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, trainer.hf_weights, conversion.convert; "
        "print(sorted(m for m in ('tensorflow', 'torch', 'keras', 'jax', 'transformers') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert run.stdout.strip() == "[]"
