"""BertPretrainingModel: Hugging Face equivalence, named weights contract, presets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.trainer import hf_reference
from trainer.bert_model import BertPretrainingModel
from trainer.config import PRESETS, BertConfig

TINY = BertConfig.from_preset(
    "tiny", vocab_size=97, num_hidden_layers=2, max_position_embeddings=64, hidden_dropout_prob=0.1
)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_matches_hugging_face_bert_for_pretraining(hidden_act):
    config = BertConfig.from_preset("tiny", vocab_size=97, max_position_embeddings=64, hidden_act=hidden_act)
    hf = hf_reference.hf_model(config)
    model = BertPretrainingModel(config)
    model.set_named_weights(hf_reference.named_weights_from_hf(hf, config))
    inputs = hf_reference.random_inputs(config)

    ours = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs, training=False).items()}
    ref = hf_reference.hf_outputs(hf, inputs)

    assert ours["mlm_logits"].shape == (3, 4, 97)
    np.testing.assert_allclose(ours["mlm_logits"], ref["mlm_logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["nsp_logits"], ref["nsp_logits"], atol=1e-5, rtol=0)


def test_exact_and_tanh_gelu_differ():
    # The activation must reach the computation: the same weights give different logits.
    weights = BertPretrainingModel(TINY).get_named_weights()
    inputs = hf_reference.random_inputs(TINY)
    outs = []
    for act in ("gelu", "gelu_new"):
        model = BertPretrainingModel(BertConfig.from_dict({**TINY.to_dict(), "hidden_act": act}))
        model.set_named_weights(weights)
        outs.append(keras.ops.convert_to_numpy(model(inputs)["mlm_logits"]))
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-6


def test_named_weights_follow_export_contract():
    c = TINY
    h, i, v = c.hidden_size, c.intermediate_size, c.vocab_size
    expected = {
        "embeddings/word_embeddings": (v, h),
        "embeddings/position_embeddings": (c.max_position_embeddings, h),
        "embeddings/token_type_embeddings": (c.type_vocab_size, h),
        "embeddings/layer_norm/gamma": (h,),
        "embeddings/layer_norm/beta": (h,),
        "pooler/kernel": (h, h),
        "pooler/bias": (h,),
        "mlm/transform/kernel": (h, h),
        "mlm/transform/bias": (h,),
        "mlm/transform/layer_norm/gamma": (h,),
        "mlm/transform/layer_norm/beta": (h,),
        "mlm/output_bias": (v,),
        "nsp/kernel": (h, 2),
        "nsp/bias": (2,),
    }
    for n in range(c.num_hidden_layers):
        p = f"encoder/layer_{n}"
        for part in ("query", "key", "value", "output"):
            expected[f"{p}/attention/{part}/kernel"] = (h, h)
            expected[f"{p}/attention/{part}/bias"] = (h,)
        expected.update(
            {
                f"{p}/attention/layer_norm/gamma": (h,),
                f"{p}/attention/layer_norm/beta": (h,),
                f"{p}/intermediate/kernel": (h, i),
                f"{p}/intermediate/bias": (i,),
                f"{p}/output/kernel": (i, h),
                f"{p}/output/bias": (h,),
                f"{p}/output/layer_norm/gamma": (h,),
                f"{p}/output/layer_norm/beta": (h,),
            }
        )
    model = BertPretrainingModel(c)
    weights = model.get_named_weights()
    assert {k: w.shape for k, w in weights.items()} == expected
    assert all(w.dtype == np.float32 for w in weights.values())
    # Every trainable variable is exported exactly once (the decoder is tied, not a copy).
    assert len(weights) == len(model.trainable_variables)


def test_set_named_weights_round_trips_and_lists_every_problem():
    model = BertPretrainingModel(TINY)
    weights = BertPretrainingModel(TINY).get_named_weights()
    model.set_named_weights(weights)
    for name, value in model.get_named_weights().items():
        np.testing.assert_array_equal(value, weights[name])

    bad = dict(weights)
    del bad["pooler/bias"]
    bad["extra/thing"] = np.zeros(3, np.float32)
    bad["nsp/kernel"] = np.zeros((2, TINY.hidden_size), np.float32)
    with pytest.raises(ValueError) as e:
        model.set_named_weights(bad)
    msg = str(e.value)
    assert "missing 1: ['pooler/bias']" in msg
    assert "unexpected 1: ['extra/thing']" in msg
    assert f"nsp/kernel: expected ({TINY.hidden_size}, 2), got (2, {TINY.hidden_size})" in msg


def test_padding_does_not_change_real_token_outputs():
    # The attention mask comes from input_mask: extra padded positions change nothing.
    model = BertPretrainingModel(BertConfig.from_dict({**TINY.to_dict(), "hidden_dropout_prob": 0.0}))
    inputs = hf_reference.random_inputs(TINY, batch=1, seq_len=12)
    padded = {k: v.copy() for k, v in inputs.items()}
    for k in ("input_ids", "input_mask", "segment_ids"):
        padded[k] = np.concatenate([inputs[k], np.zeros((1, 8), np.int32)], axis=1)
    padded["input_ids"][0, 12:] = 7  # garbage under the padding mask
    a = keras.ops.convert_to_numpy(model(inputs)["mlm_logits"])
    b = keras.ops.convert_to_numpy(model(padded)["mlm_logits"])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_every_preset_builds():
    expected_layers = {"tiny": 2, "mini": 4, "small": 4, "medium": 8, "base": 12, "large": 24}
    for name, n_layers in expected_layers.items():
        assert PRESETS[name].num_hidden_layers == n_layers
    assert (PRESETS["large"].hidden_size, PRESETS["base"].hidden_size) == (1024, 768)
    assert len([n for n in PRESETS if n.startswith("L")]) == 24
    for name, preset in PRESETS.items():
        # Full width, but one layer (every layer has the same shapes) and a small vocabulary
        # and position table: random initialization of BERT-large alone takes ~10 s here.
        config = BertConfig.from_preset(name, vocab_size=32, max_position_embeddings=16, num_hidden_layers=1)
        model = BertPretrainingModel(config)
        n_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        h, i = preset.hidden_size, preset.intermediate_size
        per_layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h
        heads = (h * h + h) * 2 + 2 * h + 32 + 2 * h + 2  # pooler, MLM transform, LN, bias, NSP
        assert n_params == per_layer + (32 + 16 + 2) * h + 2 * h + heads, name
        assert len(model.encoder_layers) == 1
        assert preset.hidden_size == preset.num_attention_heads * 64, name


def test_config_json_round_trip(tmp_path):
    path = str(tmp_path / "bert_config.json")
    TINY.to_json_file(path)
    assert BertConfig.from_json_file(path) == TINY
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        BertConfig.from_preset("tiny", hidden_act="relu")
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=3"):
        BertConfig(hidden_size=128, num_attention_heads=3)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        BertConfig.from_preset("huge")
    with pytest.raises(ValueError, match=r"unknown BertConfig key\(s\) \['directionality'\]"):
        BertConfig.from_dict({**TINY.to_dict(), "directionality": "bidi"})
