"""``--verify``: the trained Keras model and the converted torch model on the same examples.

Examples come from the validation TFRecords named by a ``metadata.json`` (docs/data_format.md)
or, without data, are generated from the vocabulary ([CLS] A [SEP] B [SEP], padding, masked
positions holding ``[MASK]``). Both models run in float32, in inference mode; the check fails
when the MLM logits at the masked positions or the NSP logits differ by more than the
tolerance, or when the MLM losses (each computed by its framework's own code) differ by more
than the tolerance. The tokenizer is checked too: the converted folder's ``AutoTokenizer``
must give the ids of its ``tokenizer.json`` (the vocabulary's, copied) on text decoded from
the examples.

Imports Keras (through ``trainer.export``), torch and transformers; only ``--verify`` needs them.

Shape key: N examples, B batch, L sequence length, P predictions per sequence, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from trainer import fileio

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")


class VerificationError(ValueError):
    """The converted model does not reproduce the trained one."""


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` measured.

    Attributes:
        num_examples: examples compared.
        source: where they came from.
        max_mlm_diff: largest absolute difference of MLM logits.
        max_nsp_diff: largest absolute difference of NSP logits.
        keras_mlm_loss, torch_mlm_loss: MLM loss on the examples, from each framework.
        tokenizer_texts: texts whose tokenization was compared.
    """

    num_examples: int
    source: str
    max_mlm_diff: float
    max_nsp_diff: float
    keras_mlm_loss: float
    torch_mlm_loss: float
    tokenizer_texts: int

    def lines(self) -> list[str]:
        return [
            f"verify: {self.num_examples} examples from {self.source}",
            f"verify: max |MLM logit difference| = {self.max_mlm_diff:.3g}",
            f"verify: max |NSP logit difference| = {self.max_nsp_diff:.3g}",
            f"verify: MLM loss keras {self.keras_mlm_loss:.6f}, torch {self.torch_mlm_loss:.6f} "
            f"(difference {abs(self.keras_mlm_loss - self.torch_mlm_loss):.3g})",
            f"verify: tokenizer ids identical on {self.tokenizer_texts} texts",
        ]


# --- examples -------------------------------------------------------------------------------


def generated_examples(
    tokens, *, num_examples: int, seq_len: int, num_predictions: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic pretraining-shaped examples drawn from the vocabulary.

    Args:
        tokens: the vocabulary in id order (must hold ``[PAD] [CLS] [SEP] [MASK]``).
        num_examples: N.
        seq_len: L (at least 8).
        num_predictions: P, masked positions per example (at most L // 4).
        seed: the generator's seed.

    Returns:
        int32 ``input_ids, input_mask, segment_ids, masked_lm_positions, masked_lm_ids``,
        float32 ``masked_lm_weights`` and int32 ``next_sentence_labels`` [N].
    """
    tokens = list(tokens)
    ids = {t: i for i, t in enumerate(tokens)}
    pad, cls, sep, mask = (ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]"))
    ordinary = np.array(
        [i for i, t in enumerate(tokens) if not re.fullmatch(r"\[[^\]]*\]", t)] or [ids["[UNK]"]], np.int32
    )
    rng = np.random.default_rng(seed)
    out = {
        "input_ids": np.full((num_examples, seq_len), pad, np.int32),
        "input_mask": np.zeros((num_examples, seq_len), np.int32),
        "segment_ids": np.zeros((num_examples, seq_len), np.int32),
        "masked_lm_positions": np.zeros((num_examples, num_predictions), np.int32),
        "masked_lm_ids": np.zeros((num_examples, num_predictions), np.int32),
        "masked_lm_weights": np.zeros((num_examples, num_predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=num_examples).astype(np.int32),
    }
    for n in range(num_examples):
        length = int(rng.integers(max(8, seq_len // 2), seq_len + 1))  # real tokens incl. specials
        len_a = int(rng.integers(1, length - 3))
        body = rng.choice(ordinary, size=length - 3)
        row = np.concatenate([[cls], body[:len_a], [sep], body[len_a:], [sep]]).astype(np.int32)
        out["input_ids"][n, :length] = row
        out["input_mask"][n, :length] = 1
        out["segment_ids"][n, len_a + 2 : length] = 1
        candidates = [i for i in range(1, length) if row[i] != sep]
        count = int(rng.integers(1, min(num_predictions, len(candidates)) + 1))
        positions = np.sort(rng.choice(candidates, size=count, replace=False))
        out["masked_lm_positions"][n, :count] = positions
        out["masked_lm_ids"][n, :count] = row[positions]
        out["masked_lm_weights"][n, :count] = 1.0
        out["input_ids"][n, positions] = mask
    return out


def tfrecord_examples(
    data_dir: str, *, num_examples: int, vocab_size: int
) -> tuple[dict[str, np.ndarray], str]:
    """Reads up to ``num_examples`` validation examples of the TFRecord set in ``data_dir``.

    Falls back to the train split when the validation split is empty.

    Raises:
        FileNotFoundError: for a missing ``metadata.json`` or no matching file.
        ValueError: when the data's vocabulary size differs from the model's.
    """
    import tensorflow as tf

    meta_path = fileio.join(data_dir, "metadata.json")
    if not fileio.exists(meta_path):
        raise FileNotFoundError(f"{meta_path} not found: --data_dir must hold the TFRecords' metadata.json")
    meta = json.loads(fileio.read_text(meta_path))
    if meta.get("vocab_size") != vocab_size:
        raise ValueError(
            f"{meta_path}: vocab_size {meta.get('vocab_size')} differs from the model's {vocab_size}"
        )
    splits = meta["splits"]
    split = "validation" if (splits.get("validation") or {}).get("num_examples") else "train"
    files = fileio.glob(fileio.join(data_dir, splits[split]["file_pattern"]))
    if not files:
        raise FileNotFoundError(f"no file matches {splits[split]['file_pattern']} in {data_dir}")
    seq, pred = meta["max_seq_length"], meta["max_predictions_per_seq"]
    spec = {
        name: tf.io.FixedLenFeature([seq], tf.int64) for name in ("input_ids", "input_mask", "segment_ids")
    }
    spec.update(
        masked_lm_positions=tf.io.FixedLenFeature([pred], tf.int64),
        masked_lm_ids=tf.io.FixedLenFeature([pred], tf.int64),
        masked_lm_weights=tf.io.FixedLenFeature([pred], tf.float32),
        next_sentence_labels=tf.io.FixedLenFeature([1], tf.int64),
    )
    dataset = tf.data.TFRecordDataset(files, compression_type=meta.get("compression") or "")
    rows = [tf.io.parse_single_example(r, spec) for r in dataset.take(num_examples)]
    out = {
        name: np.stack([r[name].numpy() for r in rows]).astype(
            np.float32 if name == "masked_lm_weights" else np.int32
        )
        for name in spec
    }
    out["next_sentence_labels"] = out["next_sentence_labels"].reshape(-1)
    return out, f"{split} split of {data_dir} ({len(files)} file(s))"


# --- the two models ------------------------------------------------------------------------


def _keras_outputs(export_dir: str, examples: dict, *, batch_size: int) -> dict[str, np.ndarray]:
    from keras import ops

    from trainer import losses
    from trainer.export import build_model_from_export

    model = build_model_from_export(export_dir)
    mlm, nsp, loss_sum = [], [], 0.0
    for start in range(0, len(examples["input_ids"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in examples.items()}
        out = model({k: batch[k] for k in INPUT_NAMES}, training=False)
        terms = losses.pretraining_losses(labels=batch, outputs=out, use_nsp=False)
        loss_sum += float(ops.convert_to_numpy(ops.sum(terms["mlm_losses"] * terms["mlm_weights"])))
        mlm.append(np.asarray(ops.convert_to_numpy(out["mlm_logits"]), np.float32))
        nsp.append(np.asarray(ops.convert_to_numpy(out["nsp_logits"]), np.float32))
    weight_sum = float(examples["masked_lm_weights"].sum())
    return {"mlm": np.concatenate(mlm), "nsp": np.concatenate(nsp), "loss": loss_sum / weight_sum}


def _torch_outputs(hf_dir: str, examples: dict, *, batch_size: int) -> dict[str, np.ndarray]:
    import torch
    from transformers import BertForPreTraining
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = BertForPreTraining.from_pretrained(hf_dir, dtype=torch.float32).eval()
    mlm, nsp, loss_sum = [], [], 0.0
    for start in range(0, len(examples["input_ids"]), batch_size):
        batch = {k: torch.from_numpy(np.asarray(v[start : start + batch_size])) for k, v in examples.items()}
        positions = batch["masked_lm_positions"].long()
        with torch.no_grad():
            out = model(
                input_ids=batch["input_ids"].long(),
                attention_mask=batch["input_mask"].long(),
                token_type_ids=batch["segment_ids"].long(),
            )
        logits = torch.gather(  # [B, P, V]
            out.prediction_logits, 1, positions[:, :, None].expand(-1, -1, out.prediction_logits.shape[-1])
        )
        # BERT's MLM loss as transformers computes it: labels -100 except at the real predictions.
        labels = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
        real = batch["masked_lm_weights"] > 0
        rows = torch.arange(labels.shape[0])[:, None].expand_as(positions)
        labels[rows[real], positions[real]] = batch["masked_lm_ids"].long()[real]
        loss = torch.nn.functional.cross_entropy(
            out.prediction_logits.reshape(-1, out.prediction_logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        loss_sum += float(loss)
        mlm.append(logits.numpy())
        nsp.append(out.seq_relationship_logits.numpy())
    weight_sum = float(examples["masked_lm_weights"].sum())
    return {"mlm": np.concatenate(mlm), "nsp": np.concatenate(nsp), "loss": loss_sum / weight_sum}


def _check_tokenizer(hf_dir: str, examples: dict, *, limit: int = 8) -> int:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer_json_path = f"{hf_dir}/tokenizer.json"
    reference = Tokenizer.from_file(tokenizer_json_path)
    converted = AutoTokenizer.from_pretrained(hf_dir)
    texts = []
    for row, mask in zip(examples["input_ids"][:limit], examples["input_mask"][:limit], strict=True):
        texts.append(reference.decode([int(i) for i in row[mask > 0]], skip_special_tokens=True))
    for text in texts:
        want = reference.encode(text).ids
        got = converted(text)["input_ids"]
        if list(got) != list(want):
            raise VerificationError(
                f"the converted tokenizer gives other ids than {tokenizer_json_path} on {text!r}: {got} vs {want}"
            )
    return len(texts)


def verify(
    *,
    export_dir: str,
    hf_dir: str,
    examples: dict[str, np.ndarray],
    source: str,
    tolerance: float = 1e-4,
    batch_size: int = 8,
) -> VerifyResult:
    """Runs both models on ``examples`` and compares; see the module docstring.

    Args:
        export_dir: the trainer's export.
        hf_dir: the converted folder (local).
        examples: int32/float32 arrays as ``generated_examples`` returns.
        source: where the examples came from, for the report.
        tolerance: largest allowed absolute difference of logits and of the MLM loss.
        batch_size: examples per forward pass.

    Raises:
        VerificationError: naming the largest difference and where it is.
    """
    ours = _keras_outputs(export_dir, examples, batch_size=batch_size)
    theirs = _torch_outputs(hf_dir, examples, batch_size=batch_size)
    real = examples["masked_lm_weights"] > 0  # [N, P]: padding positions are not compared
    mlm_diff = np.abs(ours["mlm"] - theirs["mlm"])[real]  # [R, V]
    nsp_diff = np.abs(ours["nsp"] - theirs["nsp"])
    result = VerifyResult(
        num_examples=len(examples["input_ids"]),
        source=source,
        max_mlm_diff=float(mlm_diff.max()),
        max_nsp_diff=float(nsp_diff.max()),
        keras_mlm_loss=float(ours["loss"]),
        torch_mlm_loss=float(theirs["loss"]),
        tokenizer_texts=0,
    )
    failures = []
    if not result.max_mlm_diff <= tolerance:
        failures.append(f"MLM logits differ by up to {result.max_mlm_diff:.3g}")
    if not result.max_nsp_diff <= tolerance:
        failures.append(f"NSP logits differ by up to {result.max_nsp_diff:.3g}")
    if not abs(result.keras_mlm_loss - result.torch_mlm_loss) <= tolerance:
        failures.append(
            f"MLM loss {result.keras_mlm_loss:.6f} (keras) vs {result.torch_mlm_loss:.6f} (torch)"
        )
    if failures:
        raise VerificationError(
            f"the converted model does not reproduce the trained one (tolerance {tolerance:g}): "
            + "; ".join(failures)
        )
    texts = _check_tokenizer(hf_dir, examples)
    return dataclasses.replace(result, tokenizer_texts=texts)
