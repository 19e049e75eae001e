"""What the trainer knows about its data: from ``metadata.json`` (docs/data_format.md) or flags.

Pure Python (no TensorFlow): reading the metadata and refusing a mismatch with the model
happen before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import json

from trainer import fileio
from trainer.config import BertConfig

METADATA_NAME = "metadata.json"
FORMAT_NAME = "bert-pretraining-tfrecord"
FORMAT_VERSIONS = (1,)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """One TFRecord set: where its splits are and the shapes of its examples.

    Attributes:
        train_pattern: glob of the training files (absolute, local or ``gs://``).
        eval_pattern: glob of the validation files, or None.
        max_seq_length: L, the length of ``input_ids``.
        max_predictions_per_seq: P, the length of ``masked_lm_positions``.
        vocab_size: the vocabulary the ids come from.
        nsp: whether ``next_sentence_labels`` carry NSP labels.
        compression: None or ``"GZIP"``.
        num_train_examples, num_eval_examples: counts from the metadata (None if unknown).
        metadata: the parsed ``metadata.json`` (None when the spec comes from flags).
        source: where the facts came from, for messages.
    """

    train_pattern: str
    eval_pattern: str | None
    max_seq_length: int
    max_predictions_per_seq: int
    vocab_size: int | None
    nsp: bool = True
    compression: str | None = None
    num_train_examples: int | None = None
    num_eval_examples: int | None = None
    metadata: dict | None = None
    source: str = "flags"

    def __post_init__(self):
        if self.max_seq_length <= 0 or self.max_predictions_per_seq <= 0:
            raise ValueError(
                f"{self.source}: max_seq_length={self.max_seq_length} and "
                f"max_predictions_per_seq={self.max_predictions_per_seq} must be positive"
            )
        if self.max_predictions_per_seq > self.max_seq_length:
            raise ValueError(
                f"{self.source}: max_predictions_per_seq={self.max_predictions_per_seq} exceeds "
                f"max_seq_length={self.max_seq_length}"
            )
        if self.compression not in (None, "GZIP"):
            raise ValueError(f'{self.source}: compression {self.compression!r} is not null or "GZIP"')


def _read_metadata(path: str) -> dict:
    try:
        metadata = json.loads(fileio.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: format {metadata.get('format')!r} is not {FORMAT_NAME!r}")
    if metadata.get("format_version") not in FORMAT_VERSIONS:
        raise ValueError(
            f"{path}: format_version {metadata.get('format_version')!r} is not one this trainer "
            f"reads {FORMAT_VERSIONS}"
        )
    missing = [
        k for k in ("max_seq_length", "max_predictions_per_seq", "vocab_size", "splits") if k not in metadata
    ]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    if "train" not in metadata["splits"]:
        raise ValueError(f"{path}: splits has no 'train' entry")
    return metadata


def _agree(name: str, from_metadata, from_flag, path: str):
    """The metadata value, refusing a flag that says otherwise."""
    if from_flag is not None and from_flag != from_metadata:
        raise ValueError(f"--{name}={from_flag} disagrees with {name}={from_metadata} in {path}")
    return from_metadata


def _nsp(from_metadata: bool, requested: bool | None, path: str) -> bool:
    """NSP data may train MLM only; MLM-only data cannot train NSP."""
    if requested and not from_metadata:
        raise ValueError(f"NSP was requested but {path} says nsp=false (its next_sentence_labels are all 0)")
    return from_metadata if requested is None else requested


def load_data_spec(
    *,
    data_dir: str | None = None,
    train_files: str | None = None,
    eval_files: str | None = None,
    max_seq_length: int | None = None,
    max_predictions_per_seq: int | None = None,
    vocab_size: int | None = None,
    nsp: bool | None = None,
) -> DataSpec:
    """Builds the ``DataSpec`` from ``data_dir/metadata.json`` or, without it, from the flags.

    Flags given alongside a metadata file must agree with it.

    Raises:
        ValueError: naming the file or flag at fault.
    """
    metadata_path = fileio.join(data_dir, METADATA_NAME) if data_dir else None
    if metadata_path and fileio.exists(metadata_path):
        md = _read_metadata(metadata_path)
        splits = md["splits"]
        eval_split = splits.get("validation")
        train_pattern = train_files or fileio.join(data_dir, splits["train"]["file_pattern"])
        if eval_files:
            eval_pattern = eval_files
        else:
            eval_pattern = fileio.join(data_dir, eval_split["file_pattern"]) if eval_split else None
        return DataSpec(
            train_pattern=train_pattern,
            eval_pattern=eval_pattern,
            max_seq_length=_agree("max_seq_length", md["max_seq_length"], max_seq_length, metadata_path),
            max_predictions_per_seq=_agree(
                "max_predictions_per_seq",
                md["max_predictions_per_seq"],
                max_predictions_per_seq,
                metadata_path,
            ),
            vocab_size=_agree("vocab_size", md["vocab_size"], vocab_size, metadata_path),
            nsp=_nsp(bool(md.get("nsp", True)), nsp, metadata_path),
            compression=md.get("compression"),
            num_train_examples=splits["train"].get("num_examples"),
            num_eval_examples=eval_split.get("num_examples") if eval_split and not eval_files else None,
            metadata=md,
            source=metadata_path,
        )
    where = f"{metadata_path} not found" if metadata_path else "no --data_dir"
    if train_files is None and data_dir:
        train_files = fileio.join(data_dir, "train-*")
    missing = [
        flag
        for flag, value in (
            ("--train_files", train_files),
            ("--max_seq_length", max_seq_length),
            ("--max_predictions_per_seq", max_predictions_per_seq),
        )
        if value is None
    ]
    if missing:
        raise ValueError(f"{where}: without a metadata.json the data needs the flag(s) {', '.join(missing)}")
    compression = "GZIP" if train_files.endswith(".gz") else None
    return DataSpec(
        train_pattern=train_files,
        eval_pattern=eval_files,
        max_seq_length=max_seq_length,
        max_predictions_per_seq=max_predictions_per_seq,
        vocab_size=vocab_size,
        nsp=True if nsp is None else nsp,
        compression=compression,
        source="flags",
    )


def check_model_fits_data(spec: DataSpec, config: BertConfig) -> None:
    """Refuses a model that cannot train on ``spec``'s data, naming both values.

    Raises:
        ValueError: vocabulary sizes differ, or the sequences are longer than the model's
            position table.
    """
    problems = []
    if spec.vocab_size is not None and spec.vocab_size != config.vocab_size:
        problems.append(
            f"the data's vocab_size={spec.vocab_size} differs from the model's vocab_size={config.vocab_size}"
        )
    if spec.max_seq_length > config.max_position_embeddings:
        problems.append(
            f"the data's max_seq_length={spec.max_seq_length} exceeds the model's "
            f"max_position_embeddings={config.max_position_embeddings}"
        )
    if problems:
        raise ValueError(f"model and data ({spec.source}) do not fit: " + "; ".join(problems))
