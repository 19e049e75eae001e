"""The golden round trip: a tiny random Keras model -> export -> convert -> transformers loads it.

Every load is from the converted folder; ``test_loads_with_hf_hub_offline`` runs the loaders in
a fresh process with ``HF_HUB_OFFLINE=1`` (huggingface_hub reads it at import time).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conversion import convert
from tests.conversion import helpers
from tests.trainer import hf_reference

TOL = 1e-4


def _keras_model(config, seed):
    from trainer.bert_model import BertPretrainingModel

    model = BertPretrainingModel(config)
    model.set_named_weights(helpers.random_weights(config, seed=seed))
    return model


@pytest.fixture(scope="module", params=["gelu", "gelu_new"])
def converted(request, tmp_path_factory):
    """(config, keras model, vocab dir, model dir, converted dir, CLI output) for one activation."""
    act = request.param
    root = tmp_path_factory.mktemp(f"convert_{act}")
    config = helpers.with_act(helpers.TINY, act)
    model = _keras_model(config, seed=1)
    from trainer.export import export_model

    export_model(model, config, str(root / "model" / "export"), helpers.TRAINING_STATE)
    vocab_dir = helpers.write_vocab_dir(str(root / "vocab"), config.vocab_size)
    out = str(root / "hf")
    log = []
    args = convert.parse_args(
        ["--model_dir", str(root / "model"), "--vocab_dir", vocab_dir, "--output_dir", out, "--verify"]
    )
    convert.convert(args, log=log.append)
    return config, model, vocab_dir, log, out


def test_convert_verify_and_transformers_logits(converted):
    config, model, vocab_dir, log, out = converted
    assert log[0] == "verify: 32 examples from the vocabulary (generated)"
    assert log[-2] == "verify: tokenizer ids identical on 8 texts"
    mlm_diff = float(log[1].split("= ")[1])
    assert 0 <= mlm_diff <= TOL
    assert sorted(os.listdir(out)) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    # No staging directory is left beside the output.
    assert sorted(os.listdir(os.path.dirname(out))) == ["hf", "model", "vocab"]
    hf_config = json.load(open(os.path.join(out, "config.json")))
    assert hf_config["architectures"] == ["BertForPreTraining"]
    assert hf_config["hidden_act"] == config.hidden_act
    assert hf_config["layer_norm_eps"] == 1e-12 and hf_config["pad_token_id"] == 0

    from transformers import AutoModelForPreTraining

    hf, info = AutoModelForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs = hf_reference.random_inputs(config, batch=3, seq_len=20, num_pred=4, seed=7)
    ours = model(inputs, training=False)
    theirs = hf_reference.hf_outputs(hf.eval(), inputs)
    for name in ("mlm_logits", "nsp_logits"):
        np.testing.assert_allclose(np.asarray(ours[name]), theirs[name], atol=TOL, rtol=0, err_msg=name)
    # The check is sensitive to the activation: the other GELU is far outside the tolerance.
    other = {"gelu": "gelu_new", "gelu_new": "gelu"}[config.hidden_act]
    wrong = hf_reference.hf_outputs(
        AutoModelForPreTraining.from_pretrained(out, hidden_act=other).eval(), inputs
    )
    assert np.abs(np.asarray(ours["mlm_logits"]) - wrong["mlm_logits"]).max() > 10 * TOL


def test_every_auto_class_and_fill_mask_load_offline(converted):
    config, _, _, _, out = converted
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "भारत की राजधानी [MASK] है।"
    enc = tokenizer(text, return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"][0]) == [
        "[CLS]", "भारत", "की", "राजधानी", "[MASK]", "है", "।", "[SEP]",
    ]  # fmt: skip
    assert enc["token_type_ids"].tolist() == [[0] * 8]
    pretraining = AutoModelForPreTraining.from_pretrained(out).eval()
    mlm, mlm_info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    encoder = AutoModel.from_pretrained(out).eval()
    assert not mlm_info["missing_keys"]
    with torch.no_grad():
        full = pretraining(**enc)
        masked_lm = mlm.eval()(**enc)
        hidden = encoder(**enc)
    np.testing.assert_array_equal(full.prediction_logits.numpy(), masked_lm.logits.numpy())
    assert hidden.last_hidden_state.shape == (1, 8, config.hidden_size)
    assert hidden.pooler_output.shape == (1, config.hidden_size)

    fill = pipeline("fill-mask", model=out, tokenizer=out, top_k=3)
    predictions = fill(text)
    assert len(predictions) == 3
    vocab = open(os.path.join(out, "vocab.txt"), encoding="utf-8").read().split("\n")
    expected_top = int(np.argmax(masked_lm.logits[0, 4].numpy()))
    assert predictions[0]["token"] == expected_top and predictions[0]["token_str"] == vocab[expected_top]
    assert all(p["sequence"].startswith("भारत की राजधानी") for p in predictions)


def test_tokenizer_is_the_training_tokenizer(converted):
    _, _, vocab_dir, _, out = converted
    import unicodedata

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    reference = Tokenizer.from_file(os.path.join(vocab_dir, "tokenizer.json"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert config["do_lower_case"] is False and config["strip_accents"] is False
    texts = [
        "हिन्दी भाषा में कुछ शब्द।",
        "हि\u200dन्दी भाषा",  # ZWJ kept (BERT's text cleaning would delete it)
        unicodedata.normalize("NFD", "हिन्दी"),  # normalized to NFC as in training
        "abc [MASK] भारत",
    ]
    for text in texts:
        assert tokenizer(text)["input_ids"] == reference.encode(text).ids, text


def test_model_card_has_data_steps_metrics_and_usage(converted):
    _, _, _, _, out = converted
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert card.startswith("---\nlanguage: hi\n")
    for expected in (
        "| step | 40 |",
        "| examples_seen | 320 |",
        "| train examples | 900 |",
        "| max_seq_length | 32 |",
        "### Final training metrics (last logged steps)\n\n| | |\n|---|---|\n| loss | 6.5 |\n| mlm_accuracy | 0.05 |",
        "### Final evaluation metrics (validation split)\n\n| | |\n|---|---|\n| loss | 6.7 |",
        "| keras_backend | tensorflow |",
        f"AutoModelForMaskedLM.from_pretrained({out!r})",
        'pipeline("fill-mask"',
    ):
        assert expected in card, expected


def test_fill_mask_demo_prints_predictions(converted, capsys):
    _, _, _, _, out = converted
    from conversion import fill_mask_demo

    assert fill_mask_demo.main(["--model_dir", out, "--top_k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * len(fill_mask_demo.SENTENCES)
    assert lines[0] == fill_mask_demo.SENTENCES[0]
    vocab = set(open(os.path.join(out, "vocab.txt"), encoding="utf-8").read().split("\n"))
    for line in lines[1:3]:
        score, token = line.split()
        assert 0.0 <= float(score) <= 1.0 and token.replace(" ", "") in vocab | {t[2:] for t in vocab}
    assert fill_mask_demo.main(["--model_dir", out, "no mask here"]) == 1
    assert "needs exactly one [MASK]" in capsys.readouterr().err


_OFFLINE_SCRIPT = """
import json, sys
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline
out = sys.argv[1]
loaded = [type(cls.from_pretrained(out)).__name__ for cls in (AutoModelForPreTraining, AutoModelForMaskedLM, AutoModel)]
tokenizer = AutoTokenizer.from_pretrained(out)
predictions = pipeline("fill-mask", model=out, tokenizer=out, top_k=2)("भारत की राजधानी [MASK] है।")
print(json.dumps({"models": loaded, "tokenizer": type(tokenizer).__name__, "predictions": predictions}))
"""


def test_loads_with_hf_hub_offline(converted):
    import subprocess
    import sys

    out = converted[-1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, out], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["models"] == ["BertForPreTraining", "BertForMaskedLM", "BertModel"]
    assert result["tokenizer"] == "TokenizersBackend"
    assert len(result["predictions"]) == 2 and all(
        p["sequence"].startswith("भारत") for p in result["predictions"]
    )
