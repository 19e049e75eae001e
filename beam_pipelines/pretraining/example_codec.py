"""``tf.train.Example`` records and TFRecord framing, encoded by hand (no TensorFlow).

The protobuf wire format of an Example with google-research/bert's seven features
(docs/data_format.md) is written directly: packed int64 varints from a lookup table,
float32 weights as fixed 4-byte values. ``tf.io.parse_single_example`` reads the
result (tests/pretraining/test_example_codec.py checks it); encoding needs no TF on
the workers and costs a few microseconds per record.

A TFRecord is ``uint64 length, uint32 masked_crc32c(length), data, uint32
masked_crc32c(data)``, little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

try:  # The C implementation ships with google-cloud-storage; Beam's fallback is slower.
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover
    from apache_beam.io.tfrecordio import _default_crc32c_fn as _crc32c

FEATURE_NAMES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)

_ONE_F32 = struct.pack("<f", 1.0)
_ZERO_F32 = b"\x00\x00\x00\x00"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negatives as 10-byte two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + varint(len(payload)) + payload


def _map_entry_prefix(name: str) -> bytes:
    # Features.feature is map<string, Feature>: entry = {1: key, 2: value}.
    return _len_field(0x0A, name.encode("ascii"))


_PREFIX = {name: _map_entry_prefix(name) for name in FEATURE_NAMES}


def _int64_feature(name: str, packed: bytes) -> bytes:
    # Feature{int64_list (3): Int64List{value (1): packed}}
    feature = _len_field(0x1A, _len_field(0x0A, packed))
    return _len_field(0x0A, _PREFIX[name] + _len_field(0x12, feature))


def _float_feature(name: str, packed: bytes) -> bytes:
    # Feature{float_list (2): FloatList{value (1): packed fixed32}}
    feature = _len_field(0x12, _len_field(0x0A, packed))
    return _len_field(0x0A, _PREFIX[name] + _len_field(0x12, feature))


class ExampleEncoder:
    """Serializes instances as ``tf.train.Example`` bytes for fixed sequence lengths.

    Args:
        max_seq_length: length of ``input_ids``, ``input_mask`` and ``segment_ids``.
        max_predictions_per_seq: length of the ``masked_lm_*`` features.
        vocab_size: ids are checked against it by the varint table.
    """

    def __init__(self, *, max_seq_length: int, max_predictions_per_seq: int, vocab_size: int):
        self.max_seq_length = max_seq_length
        self.max_predictions_per_seq = max_predictions_per_seq
        self._varints = [varint(i) for i in range(max(vocab_size, max_seq_length))]

    def encode(
        self,
        *,
        tokens: Sequence[int],
        num_segment_a: int,
        masked_positions: Sequence[int],
        masked_ids: Sequence[int],
        next_sentence_label: int,
    ) -> bytes:
        """Returns the serialized Example of one instance.

        Raises:
            ValueError: if the instance is longer than the fixed lengths.
        """
        n = len(tokens)
        pad = self.max_seq_length - n
        k = len(masked_positions)
        kpad = self.max_predictions_per_seq - k
        if pad < 0 or kpad < 0:
            raise ValueError(
                f"instance of {n} tokens and {k} targets exceeds max_seq_length="
                f"{self.max_seq_length} / max_predictions_per_seq={self.max_predictions_per_seq}"
            )
        table = self._varints
        zeros = b"\x00" * pad
        kzeros = b"\x00" * kpad
        input_ids = b"".join([table[t] for t in tokens]) + zeros
        input_mask = b"\x01" * n + zeros
        segment_ids = b"\x00" * num_segment_a + b"\x01" * (n - num_segment_a) + zeros
        positions = b"".join([table[p] for p in masked_positions]) + kzeros
        ids = b"".join([table[t] for t in masked_ids]) + kzeros
        weights = _ONE_F32 * k + _ZERO_F32 * kpad
        label = b"\x01" if next_sentence_label else b"\x00"
        features = b"".join(
            (
                _int64_feature("input_ids", input_ids),
                _int64_feature("input_mask", input_mask),
                _int64_feature("segment_ids", segment_ids),
                _int64_feature("masked_lm_positions", positions),
                _int64_feature("masked_lm_ids", ids),
                _float_feature("masked_lm_weights", weights),
                _int64_feature("next_sentence_labels", label),
            )
        )
        return _len_field(0x0A, features)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, masked crc of the length, data, masked crc of the data."""
    length = _U64.pack(len(data))
    return length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data))


def iter_framed(buffer: bytes):
    """Yields the data of each TFRecord in ``buffer``, checking both checksums.

    Raises:
        ValueError: on a truncated record or a checksum mismatch.
    """
    offset = 0
    end = len(buffer)
    while offset < end:
        if offset + 12 > end:
            raise ValueError(f"truncated TFRecord header at byte {offset}")
        length_bytes = buffer[offset : offset + 8]
        (length,) = _U64.unpack(length_bytes)
        (length_crc,) = _U32.unpack_from(buffer, offset + 8)
        if masked_crc32c(length_bytes) != length_crc:
            raise ValueError(f"bad length checksum at byte {offset}")
        start = offset + 12
        stop = start + length
        if stop + 4 > end:
            raise ValueError(f"truncated TFRecord at byte {offset}")
        data = buffer[start:stop]
        (data_crc,) = _U32.unpack_from(buffer, stop)
        if masked_crc32c(data) != data_crc:
            raise ValueError(f"bad data checksum at byte {offset}")
        yield data
        offset = stop + 4
