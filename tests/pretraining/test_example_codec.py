"""Hand-encoded tf.train.Example records and TFRecord framing, read back by TensorFlow."""

from __future__ import annotations

import pytest

from beam_pipelines.pretraining.example_codec import ExampleEncoder, frame_record, iter_framed, varint

tf = pytest.importorskip("tensorflow")

L, P = 16, 4


def feature_spec(max_seq_length: int, max_predictions: int) -> dict:
    """The fixed-length spec of run_pretraining.py / TF Model Garden."""
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([max_predictions], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([max_predictions], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([max_predictions], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


@pytest.mark.parametrize(
    "value, encoded",
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
     (31999, b"\xff\xf9\x01"), (-1, b"\xff" * 9 + b"\x01")],
)
def test_varint(value, encoded):
    assert varint(value) == encoded


@pytest.mark.parametrize(
    "tokens, num_a, positions, ids, label",
    [
        ([2, 500, 31999, 3, 7, 3], 4, [1, 4], [900, 128], 1),
        ([2] + list(range(100, 114)) + [3], 16, [0 + 1, 5, 9, 14], [1, 2, 3, 4], 0),
        ([2, 5, 3, 6, 3], 3, [], [], 0),
    ],
)
def test_records_parse_with_the_fixed_length_spec(tokens, num_a, positions, ids, label):
    enc = ExampleEncoder(max_seq_length=L, max_predictions_per_seq=P, vocab_size=32000)
    data = enc.encode(tokens=tokens, num_segment_a=num_a, masked_positions=positions, masked_ids=ids,
                      next_sentence_label=label)
    got = {k: v.numpy().tolist() for k, v in tf.io.parse_single_example(data, feature_spec(L, P)).items()}
    pad, kpad = L - len(tokens), P - len(positions)
    assert got == {
        "input_ids": tokens + [0] * pad,
        "input_mask": [1] * len(tokens) + [0] * pad,
        "segment_ids": [0] * num_a + [1] * (len(tokens) - num_a) + [0] * pad,
        "masked_lm_positions": positions + [0] * kpad,
        "masked_lm_ids": ids + [0] * kpad,
        "masked_lm_weights": [1.0] * len(positions) + [0.0] * kpad,
        "next_sentence_labels": [label],
    }
    # The same message as google-research/bert builds (map order on the wire is free).
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    expected = tf.train.Example(features=tf.train.Features(feature={
        "input_ids": ints(got["input_ids"]),
        "input_mask": ints(got["input_mask"]),
        "segment_ids": ints(got["segment_ids"]),
        "masked_lm_positions": ints(got["masked_lm_positions"]),
        "masked_lm_ids": ints(got["masked_lm_ids"]),
        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=got["masked_lm_weights"])),
        "next_sentence_labels": ints([label]),
    }))
    assert tf.train.Example.FromString(data) == expected


def test_too_long_instances_are_refused():
    enc = ExampleEncoder(max_seq_length=4, max_predictions_per_seq=1, vocab_size=10)
    with pytest.raises(ValueError, match="max_seq_length=4"):
        enc.encode(tokens=[2, 5, 3, 6, 3], num_segment_a=3, masked_positions=[1], masked_ids=[5],
                   next_sentence_label=0)


def test_framing_is_read_by_tfrecord_dataset(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 40]
    path = tmp_path / "r.tfrecord"
    blob = b"".join(frame_record(r) for r in records)
    path.write_bytes(blob)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    assert list(iter_framed(blob)) == records


@pytest.mark.parametrize("cut, message", [(5, "truncated"), (-3, "truncated")])
def test_iter_framed_rejects_truncation(cut, message):
    blob = frame_record(b"hello")
    with pytest.raises(ValueError, match=message):
        list(iter_framed(blob[:cut]))


def test_iter_framed_rejects_a_bad_checksum():
    blob = bytearray(frame_record(b"hello"))
    blob[13] ^= 1
    with pytest.raises(ValueError, match="data checksum"):
        list(iter_framed(bytes(blob)))
