"""Remote paths (through ``tf.io.gfile``) and ``--verify`` on validation TFRecords.

TensorFlow's ``gs://`` filesystem honours no emulator (REFERENCE.md), so the remote code path
is exercised with TensorFlow's in-memory ``ram://`` filesystem: the same ``tf.io.gfile`` calls
(``copy``, ``rmtree``, ``listdir``) the converter makes on ``gs://``.
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

from conversion import convert, verify
from tests.conversion import helpers


def _upload(gfile, local_dir: str, remote_dir: str) -> None:
    for root, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), local_dir)
            gfile.copy(os.path.join(root, name), f"{remote_dir}/{rel}", overwrite=True)


def test_remote_inputs_and_output(tmp_path):
    import tensorflow as tf

    gfile = tf.io.gfile
    bucket = f"ram://bucket-{uuid.uuid4().hex[:8]}"
    helpers.write_export(str(tmp_path / "model"), helpers.TINY, helpers.random_weights(helpers.TINY))
    helpers.write_vocab_dir(str(tmp_path / "vocab"), helpers.TINY.vocab_size)
    _upload(gfile, str(tmp_path / "model"), f"{bucket}/runs/tiny")
    _upload(gfile, str(tmp_path / "vocab"), f"{bucket}/data/vocab")
    argv = ["--model_dir", f"{bucket}/runs/tiny", "--vocab_dir", f"{bucket}/data/vocab"]
    out = f"{bucket}/hf/tiny"
    assert convert.main(argv + ["--output_dir", out]) == 0
    names = sorted(gfile.listdir(out))
    assert names == sorted(
        ["README.md", "config.json", "model.safetensors", "special_tokens_map.json"]
        + ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    )
    assert sorted(n.rstrip("/") for n in gfile.listdir(f"{bucket}/hf")) == [
        "tiny"
    ]  # no temporary prefix left
    assert convert.main(argv + ["--output_dir", out]) == 1  # exists: refused without --overwrite
    gfile.remove(f"{out}/README.md")
    assert convert.main(argv + ["--output_dir", out, "--overwrite"]) == 0
    assert "README.md" in gfile.listdir(out)

    local = tmp_path / "downloaded"
    local.mkdir()
    for name in names:
        gfile.copy(f"{out}/{name}", str(local / name))
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(local)
    np.testing.assert_array_equal(
        model.bert.embeddings.word_embeddings.weight.detach().numpy(),
        helpers.random_weights(helpers.TINY)["embeddings/word_embeddings"],
    )


def _write_tfrecords(data_dir, examples, *, compression=None):
    import tensorflow as tf

    os.makedirs(data_dir, exist_ok=True)
    n, seq = examples["input_ids"].shape
    pred = examples["masked_lm_positions"].shape[1]

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    options = tf.io.TFRecordOptions(compression_type=compression or "")
    suffix = ".gz" if compression else ""
    with tf.io.TFRecordWriter(
        os.path.join(data_dir, f"validation-00000-of-00001.tfrecord{suffix}"), options
    ) as w:
        for i in range(n):
            features = {k: ints(examples[k][i]) for k in verify.INPUT_NAMES + ("masked_lm_ids",)}
            features["masked_lm_weights"] = tf.train.Feature(
                float_list=tf.train.FloatList(value=examples["masked_lm_weights"][i].tolist())
            )
            features["next_sentence_labels"] = ints([examples["next_sentence_labels"][i]])
            w.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    metadata = {
        "format": "bert-pretraining-tfrecord",
        "format_version": 1,
        "max_seq_length": seq,
        "max_predictions_per_seq": pred,
        "vocab_size": helpers.TINY.vocab_size,
        "compression": compression,
        "splits": {
            "train": {"file_pattern": "train-*-of-00001.tfrecord", "num_examples": 0},
            "validation": {"file_pattern": f"validation-*-of-00001.tfrecord{suffix}", "num_examples": n},
        },
    }
    with open(os.path.join(data_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f)


def test_generated_examples_have_the_pretraining_layout():
    tokens = helpers.vocab_tokens(120)
    ex = verify.generated_examples(tokens, num_examples=16, seq_len=32, num_predictions=5, seed=3)
    assert ex["input_ids"].shape == (16, 32) and ex["masked_lm_positions"].shape == (16, 5)
    for i in range(16):
        length = int(ex["input_mask"][i].sum())
        row = ex["input_ids"][i]
        assert row[0] == 2 and row[length - 1] == 3 and (row[length:] == 0).all()
        real = ex["masked_lm_weights"][i] > 0
        positions = ex["masked_lm_positions"][i][real]
        assert (np.diff(positions) > 0).all() and (row[positions] == 4).all()
        assert all(tokens[t].startswith("[") is False for t in ex["masked_lm_ids"][i][real])
    again = verify.generated_examples(tokens, num_examples=16, seq_len=32, num_predictions=5, seed=3)
    assert all(np.array_equal(ex[k], again[k]) for k in ex)


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_verify_reads_validation_tfrecords(tmp_path, capsys, compression):
    config = helpers.TINY
    helpers.write_export(str(tmp_path / "model"), config, helpers.random_weights(config, seed=5))
    vocab_dir = helpers.write_vocab_dir(str(tmp_path / "vocab"), config.vocab_size)
    examples = verify.generated_examples(
        helpers.vocab_tokens(config.vocab_size), num_examples=6, seq_len=24, num_predictions=4, seed=1
    )
    _write_tfrecords(tmp_path / "seq24", examples, compression=compression)
    argv = [
        "--model_dir",
        str(tmp_path / "model"),
        "--vocab_dir",
        vocab_dir,
        "--output_dir",
        str(tmp_path / "hf"),
    ]
    code = convert.main(argv + ["--verify", "--data_dir", str(tmp_path / "seq24"), "--verify_examples", "5"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"verify: 5 examples from validation split of {tmp_path / 'seq24'} (1 file(s))" in printed.out
    loss_line = next(line for line in printed.out.splitlines() if "MLM loss" in line)
    keras_loss, torch_loss = (float(x.rstrip(",")) for x in loss_line.split()[4:7:2])
    assert abs(keras_loss - torch_loss) <= 1e-4 and keras_loss > 0
