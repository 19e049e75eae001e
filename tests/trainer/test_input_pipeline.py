"""tf.data input: shapes, dtypes, gzip, sharding, determinism, resume skip; the data spec."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer.fixtures import write_pretraining_data
from trainer import input_pipeline
from trainer.config import BertConfig
from trainer.data_spec import check_model_fits_data, load_data_spec


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return write_pretraining_data(str(tmp_path_factory.mktemp("d")), num_train=64, num_eval=16, num_files=4)


def _ids(ds, n: int) -> list[tuple]:
    return [tuple(f["input_ids"].numpy()[:, :4].ravel()) for f, _ in ds.take(n)]


def test_static_int32_batches(data_dir):
    spec = load_data_spec(data_dir=data_dir)
    ds = input_pipeline.make_dataset(spec, pattern=spec.train_pattern, batch_size=8)
    features, labels = ds.element_spec
    assert {k: (v.shape.as_list(), v.dtype) for k, v in features.items()} == {
        "input_ids": ([8, 32], tf.int32),
        "input_mask": ([8, 32], tf.int32),
        "segment_ids": ([8, 32], tf.int32),
        "masked_lm_positions": ([8, 5], tf.int32),
    }
    assert {k: (v.shape.as_list(), v.dtype) for k, v in labels.items()} == {
        "masked_lm_ids": ([8, 5], tf.int32),
        "masked_lm_weights": ([8, 5], tf.float32),
        "next_sentence_labels": ([8], tf.int32),
    }
    # Repeats forever: more batches than the 64 records hold.
    assert len(list(ds.take(20))) == 20


def test_eval_is_one_ordered_pass_and_gzip_reads(tmp_path):
    plain = write_pretraining_data(str(tmp_path / "plain"), num_train=16, num_eval=24, seed=3)
    gz = write_pretraining_data(str(tmp_path / "gz"), num_train=16, num_eval=24, seed=3, gzip=True)
    spec_gz = load_data_spec(data_dir=gz)
    assert spec_gz.compression == "GZIP" and spec_gz.eval_pattern.endswith(".tfrecord.gz")
    batches = {}
    for name, d in (("plain", plain), ("gz", gz)):
        spec = load_data_spec(data_dir=d)
        assert input_pipeline.eval_batches(spec, spec.eval_pattern, batch_size=8) == (24, 3)
        ds = input_pipeline.make_eval_dataset(spec, pattern=spec.eval_pattern, batch_size=8, batches=3)
        batches[name] = [f["input_ids"].numpy() for f, y in ds if y["example_weights"].numpy().all()]
        assert input_pipeline.count_records(spec, spec.eval_pattern) == 24
    assert len(batches["plain"]) == 3  # 24 records, one pass, no padding needed
    for a, b in zip(batches["plain"], batches["gz"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_order_and_skip_continues_it(data_dir):
    spec = load_data_spec(data_dir=data_dir)

    def make(**kw):
        return input_pipeline.make_dataset(spec, pattern=spec.train_pattern, batch_size=4, **kw)

    first = _ids(make(seed=1), 12)
    assert first == _ids(make(seed=1), 12)
    assert first != _ids(make(seed=2), 12)
    assert _ids(make(seed=1, skip_batches=5), 7) == first[5:]


def test_host_shards_read_disjoint_files(data_dir):
    spec = load_data_spec(data_dir=data_dir)
    seen = []
    for index in range(2):
        ds = input_pipeline.make_eval_dataset(
            spec, pattern=spec.eval_pattern, batch_size=2, batches=4, num_shards=2, shard_index=index
        )
        seen.append({tuple(row) for f, _ in ds for row in f["input_ids"].numpy()})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 16
    with pytest.raises(ValueError, match="4 file\\(s\\) cannot be sharded over 8 hosts"):
        input_pipeline.make_dataset(spec, pattern=spec.eval_pattern, batch_size=2, num_shards=8)


def test_synthetic_batches_have_the_right_ranges():
    spec = load_data_spec(train_files="unused", max_seq_length=16, max_predictions_per_seq=3, vocab_size=40)
    ds = input_pipeline.make_synthetic_dataset(spec, batch_size=4, vocab_size=40)
    (f1, l1), (f2, _) = list(ds.take(2))
    assert f1["input_ids"].shape == (4, 16) and f1["masked_lm_positions"].shape == (4, 3)
    assert int(tf.reduce_max(f1["input_ids"])) < 40
    positions = f1["masked_lm_positions"].numpy()
    assert (np.diff(positions, axis=1) > 0).all() and positions.min() >= 1
    np.testing.assert_array_equal(
        l1["masked_lm_ids"].numpy(), np.take_along_axis(f1["input_ids"].numpy(), positions, 1)
    )
    assert not np.array_equal(f1["input_ids"].numpy(), f2["input_ids"].numpy())


def test_data_spec_from_metadata_and_refusals(data_dir, tmp_path):
    spec = load_data_spec(data_dir=data_dir)
    assert (spec.max_seq_length, spec.max_predictions_per_seq, spec.vocab_size, spec.nsp) == (32, 5, 60, True)
    assert (spec.num_train_examples, spec.num_eval_examples) == (64, 16)
    assert load_data_spec(data_dir=data_dir, nsp=False).nsp is False

    check_model_fits_data(spec, BertConfig.from_preset("tiny", vocab_size=60))
    with pytest.raises(ValueError, match="the data's vocab_size=60 differs from the model's vocab_size=61"):
        check_model_fits_data(spec, BertConfig.from_preset("tiny", vocab_size=61))

    mlm_only = write_pretraining_data(str(tmp_path / "mlm"), num_train=8, num_eval=4, nsp=False)
    with pytest.raises(ValueError, match="NSP was requested but .* says nsp=false"):
        load_data_spec(data_dir=mlm_only, nsp=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format 'something-else' is not 'bert-pretraining-tfrecord'"):
        load_data_spec(data_dir=str(bad))


def test_evaluation_batches_hold_every_example_once_and_pad_with_weight_zero(data_dir):
    spec = load_data_spec(data_dir=data_dir)
    # 16 validation examples in batches of 6: 3 batches, the last one with 2 padding rows.
    assert input_pipeline.eval_batches(spec, spec.eval_pattern, batch_size=6) == (16, 3)
    ds = input_pipeline.make_eval_dataset(spec, pattern=spec.eval_pattern, batch_size=6, batches=3)
    batches = list(ds)
    assert len(batches) == 3 and all(f["input_ids"].shape == (6, 32) for f, _ in batches)
    weights = np.concatenate([y["example_weights"].numpy() for _, y in batches])
    np.testing.assert_array_equal(weights, [1] * 16 + [0] * 2)
    # The records in file order, read without the pipeline.
    records = tf.data.TFRecordDataset(input_pipeline.list_files(spec.eval_pattern))
    whole_ids = np.array(
        [
            tf.train.Example.FromString(r.numpy()).features.feature["input_ids"].int64_list.value
            for r in records
        ]
    )
    ids = np.concatenate([f["input_ids"].numpy() for f, _ in batches])
    np.testing.assert_array_equal(ids[:16], whole_ids)  # in order, once each
    last_features, last_labels = batches[-1]
    assert not last_labels["masked_lm_weights"].numpy()[4:].any()  # padding predicts nothing
    np.testing.assert_array_equal(last_features["input_mask"].numpy()[4:, :2], [[1, 0], [1, 0]])
    # One host takes the count from metadata.json (set to 10 here: 2 batches), without reading.
    assert input_pipeline.eval_batches(
        dataclasses.replace(spec, num_eval_examples=10), spec.eval_pattern, batch_size=6
    ) == (10, 2)
    # Two hosts: each runs 2 batches over its own files; together every example once.
    assert input_pipeline.eval_batches(spec, spec.eval_pattern, batch_size=6, num_shards=2) == (16, 2)
    seen = []
    for index in range(2):
        shard = input_pipeline.make_eval_dataset(
            spec, pattern=spec.eval_pattern, batch_size=6, batches=2, num_shards=2, shard_index=index
        )
        for f, y in shard:
            seen += [
                tuple(row)
                for row, w in zip(f["input_ids"].numpy(), y["example_weights"].numpy(), strict=True)
                if w
            ]
    assert sorted(seen) == sorted(tuple(row) for row in whole_ids)
    # A host whose shard ends sooner runs whole batches of padding.
    extra = list(input_pipeline.make_eval_dataset(spec, pattern=spec.eval_pattern, batch_size=6, batches=4))[
        -1
    ][1]
    assert not extra["example_weights"].numpy().any() and not extra["masked_lm_weights"].numpy().any()


def test_evaluation_over_padded_batches_gives_the_metrics_of_the_whole_split(data_dir):
    import keras

    from trainer.bert_model import BertPretrainingModel

    spec = load_data_spec(data_dir=data_dir)
    keras.utils.set_random_seed(0)
    model = BertPretrainingModel(BertConfig.from_preset("tiny", vocab_size=60, max_position_embeddings=32))
    model.compile(optimizer="sgd")

    def evaluate(batch_size: int, batches: int) -> dict:
        ds = input_pipeline.make_eval_dataset(
            spec, pattern=spec.eval_pattern, batch_size=batch_size, batches=batches
        )
        return model.evaluate(ds, steps=batches, verbose=0, return_dict=True)

    one_batch, padded = evaluate(16, 1), evaluate(6, 3)
    for name in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"):
        assert abs(one_batch[name] - padded[name]) < 1e-6, (name, one_batch, padded)
