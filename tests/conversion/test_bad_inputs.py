"""Bad input: each case exits with status 1, names what is missing or different, and writes nothing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conversion import convert
from tests.conversion import helpers


@pytest.fixture()
def inputs(tmp_path):
    """A valid export (numpy weights) and vocabulary; returns (model_dir, vocab_dir, output_dir)."""
    helpers.write_export(str(tmp_path / "model"), helpers.TINY, helpers.random_weights(helpers.TINY))
    helpers.write_vocab_dir(str(tmp_path / "vocab"), helpers.TINY.vocab_size)
    return tmp_path / "model", tmp_path / "vocab", tmp_path / "hf"


def _run(model_dir, vocab_dir, out, *extra):
    return convert.main(
        ["--model_dir", str(model_dir), "--vocab_dir", str(vocab_dir), "--output_dir", str(out), *extra]
    )


def _assert_refused(capsys, code, out, *fragments):
    err = capsys.readouterr().err
    assert code == 1, err
    assert "bert-convert: error: " in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not os.path.exists(out)
    leftovers = [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")]
    assert leftovers == [], leftovers


def _edit_weights(model_dir, edit):
    path = os.path.join(model_dir, "export", "model.safetensors")
    weights = load_file(path)
    edit(weights)
    save_file(weights, path)


def _edit_config(model_dir, **changes):
    path = os.path.join(model_dir, "export", "bert_config.json")
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, "w"))


def test_valid_inputs_convert(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    assert _run(model_dir, vocab_dir, out) == 0, capsys.readouterr().err
    assert len(os.listdir(out)) == 7


def test_missing_export(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    shutil.rmtree(model_dir / "export")
    _assert_refused(capsys, _run(model_dir, vocab_dir, out), out, f"{model_dir}/export not found")


def test_missing_export_and_vocab_files_are_all_listed(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    os.remove(model_dir / "export" / "model.safetensors")
    os.remove(vocab_dir / "tokenizer.json")
    _assert_refused(
        capsys,
        _run(model_dir, vocab_dir, out),
        out,
        "missing input file(s)",
        f"{model_dir}/export/model.safetensors",
        f"{vocab_dir}/tokenizer.json",
    )


def test_vocabulary_size_differs_from_the_model(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    shutil.rmtree(vocab_dir)
    helpers.write_vocab_dir(str(vocab_dir), 119)
    _assert_refused(
        capsys,
        _run(model_dir, vocab_dir, out),
        out,
        "the vocabulary has 119 tokens",
        "model's vocab_size is 120",
    )


def test_vocab_txt_and_tokenizer_json_disagree(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    lines = (vocab_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[5], lines[6] = lines[6], lines[5]
    (vocab_dir / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    _assert_refused(
        capsys,
        _run(model_dir, vocab_dir, out),
        out,
        "2 token id(s) differ between vocab.txt and tokenizer.json",
    )


def test_unknown_activation(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    _edit_config(model_dir, hidden_act="relu")
    _assert_refused(
        capsys, _run(model_dir, vocab_dir, out), out, "bert_config.json", "hidden_act='relu' is not supported"
    )


def test_weights_that_do_not_fit_the_config_are_all_listed(inputs, capsys):
    model_dir, vocab_dir, out = inputs

    def edit(weights):
        del weights["encoder/layer_1/output/bias"]
        weights["pooler/kernel"] = np.zeros((32, 16), np.float32)
        weights["encoder/layer_2/output/bias"] = np.zeros(32, np.float32)

    _edit_weights(model_dir, edit)
    _assert_refused(
        capsys,
        _run(model_dir, vocab_dir, out),
        out,
        "model.safetensors: the weights do not fit bert_config.json",
        "missing 1 weight(s): ['encoder/layer_1/output/bias']",
        "unexpected 1 weight(s): ['encoder/layer_2/output/bias']",
        "pooler/kernel: expected [32, 32], got [32, 16]",
    )


def test_config_with_other_sizes_than_the_weights(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    _edit_config(model_dir, intermediate_size=48)
    _assert_refused(
        capsys,
        _run(model_dir, vocab_dir, out),
        out,
        "encoder/layer_0/intermediate/kernel: expected [32, 48], got [32, 64]",
    )


def test_existing_output_is_kept_without_overwrite(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run(model_dir, vocab_dir, out) == 1
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]
    assert _run(model_dir, vocab_dir, out, "--overwrite") == 0
    assert "keep.txt" not in os.listdir(out) and "model.safetensors" in os.listdir(out)
    assert [n for n in os.listdir(out.parent) if n.startswith(".")] == []


def test_empty_output_dir_is_used(inputs):
    model_dir, vocab_dir, out = inputs
    out.mkdir()
    assert _run(model_dir, vocab_dir, out) == 0
    assert "config.json" in os.listdir(out)


def test_verify_without_metadata_in_data_dir(inputs, capsys, tmp_path):
    model_dir, vocab_dir, out = inputs
    code = _run(model_dir, vocab_dir, out, "--verify", "--data_dir", str(tmp_path / "nodata"))
    _assert_refused(capsys, code, out, "metadata.json not found")


def test_failed_verification_writes_nothing(inputs, capsys):
    model_dir, vocab_dir, out = inputs
    # No float32 computation in two frameworks agrees to 1e-30: the check must fail and say by how much.
    code = _run(model_dir, vocab_dir, out, "--verify", "--tolerance", "1e-30", "--verify_examples", "4")
    _assert_refused(capsys, code, out, "does not reproduce the trained one", "MLM logits differ by up to")


def test_tokenizer_json_without_special_tokens_or_post_processor_is_completed(tmp_path, capsys):
    helpers.write_export(str(tmp_path / "model"), helpers.TINY, helpers.random_weights(helpers.TINY))
    vocab_dir = helpers.write_vocab_dir(str(tmp_path / "vocab"), helpers.TINY.vocab_size, bare=True)
    out = tmp_path / "hf"
    code = _run(tmp_path / "model", vocab_dir, out, "--verify", "--verify_examples", "4")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert (
        "tokenizer.json: registered ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as special tokens"
        in printed.out
    )
    assert "tokenizer.json: added the post-processor [CLS] A [SEP] / [CLS] A [SEP] B [SEP]" in printed.out
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    tokens = helpers.vocab_tokens(helpers.TINY.vocab_size)
    assert tokenizer("भारत [MASK]", "है")["input_ids"] == [2, tokens.index("भारत"), 4, 3, tokens.index("है"), 3]
    # The normalizer is the vocabulary's (NFC, ZWJ kept), not replaced.
    saved = json.load(open(out / "tokenizer.json"))
    assert saved["normalizer"] == json.load(open(os.path.join(vocab_dir, "tokenizer.json")))["normalizer"]
