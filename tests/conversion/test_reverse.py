"""The reverse direction: a folder saved by transformers -> the trainer's export -> converted back.

HF -> trainer -> HF is exact: every tensor of the original file comes back bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conversion import convert
from tests.conversion import helpers
from trainer import hf_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_KEYS = tuple(hf_weights.CONFIG_MAP.values())


def _save_hf(path, cls_name: str, act: str) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=helpers.TINY.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_act=act,
        layer_norm_eps=1e-7,
    )
    model = getattr(transformers, cls_name)(config)
    with torch.no_grad():  # LayerNorms and biases away from their initial ones and zeros
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path)


def _import_with_the_api(hf_dir: str, model_dir: str) -> None:
    from trainer.bert_model import BertPretrainingModel
    from trainer.export import export_model
    from trainer.hf_weights import load_hf_bert

    config, weights, _ = load_hf_bert(hf_dir)
    model = BertPretrainingModel(config)
    model.set_named_weights(weights)
    export_model(model, config, os.path.join(model_dir, "export"), {"step": 0})


def _assert_same_tensors(original_dir, converted_dir, prefix=""):
    original = load_file(os.path.join(original_dir, "model.safetensors"))
    converted = load_file(os.path.join(converted_dir, "model.safetensors"))
    for key, value in original.items():
        np.testing.assert_array_equal(converted[prefix + key], value, err_msg=key)
    a = json.load(open(os.path.join(original_dir, "config.json")))
    b = json.load(open(os.path.join(converted_dir, "config.json")))
    assert {k: a[k] for k in CONFIG_KEYS} == {k: b[k] for k in CONFIG_KEYS}
    return original, converted


def _has_init_from_hf() -> bool:
    try:
        from trainer import task
    except ImportError:
        return False
    return (
        "--init_from_hf" in task.parse_args.__code__.co_consts or "init_from_hf" in open(task.__file__).read()
    )


@pytest.mark.skipif(not _has_init_from_hf(), reason="trainer.task has no --init_from_hf")
def test_pretraining_round_trip_through_trainer_task_is_exact(tmp_path):
    hf_dir, model_dir, out = tmp_path / "hf_in", tmp_path / "model", tmp_path / "hf_out"
    _save_hf(hf_dir, "BertForPreTraining", "gelu_new")
    run = subprocess.run(
        [sys.executable, "-m", "trainer.task", "--init_from_hf", str(hf_dir), "--train_steps", "0"]
        + ["--model_dir", str(model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    vocab_dir = helpers.write_vocab_dir(str(tmp_path / "vocab"), helpers.TINY.vocab_size)
    argv = ["--model_dir", str(model_dir), "--vocab_dir", vocab_dir, "--output_dir", str(out), "--verify"]
    assert convert.main(argv + ["--verify_examples", "8"]) == 0
    original, converted = _assert_same_tensors(hf_dir, out)
    assert set(converted) == set(original)  # same keys: nothing initialized, nothing dropped

    import torch
    from transformers import AutoModelForPreTraining

    ids = torch.tensor([[2, 10, 11, 4, 12, 3, 13, 14, 3]])
    with torch.no_grad():
        before = AutoModelForPreTraining.from_pretrained(hf_dir).eval()(input_ids=ids)
        after = AutoModelForPreTraining.from_pretrained(out).eval()(input_ids=ids)
    np.testing.assert_array_equal(before.prediction_logits.numpy(), after.prediction_logits.numpy())
    np.testing.assert_array_equal(
        before.seq_relationship_logits.numpy(), after.seq_relationship_logits.numpy()
    )


@pytest.mark.parametrize(
    ("cls_name", "prefix", "added"),
    [
        ("BertForMaskedLM", "", {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} | {"cls.seq_relationship.weight", "cls.seq_relationship.bias"}),
        ("BertModel", "bert.", {"cls.predictions.bias", "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
         | {f"cls.predictions.transform.{k}" for k in ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias")}),
    ],
)  # fmt: skip
def test_masked_lm_and_encoder_checkpoints_import_exactly(tmp_path, cls_name, prefix, added):
    hf_dir, model_dir, out = tmp_path / "hf_in", tmp_path / "model", tmp_path / "hf_out"
    _save_hf(hf_dir, cls_name, "gelu")
    _import_with_the_api(str(hf_dir), str(model_dir))
    vocab_dir = helpers.write_vocab_dir(str(tmp_path / "vocab"), helpers.TINY.vocab_size)
    assert (
        convert.main(["--model_dir", str(model_dir), "--vocab_dir", vocab_dir, "--output_dir", str(out)]) == 0
    )
    original, converted = _assert_same_tensors(hf_dir, out, prefix)
    assert set(converted) - {prefix + k for k in original} == added
