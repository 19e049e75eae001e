"""Small inputs for the conversion tests: a vocabulary directory, random weights, exports.

The vocabulary is built with ``tokenizers`` the way docs/data_format.md describes the
vocabulary stage's output (special tokens at ids 0-4, NFC normalizer that keeps format
characters, BERT pre-tokenization, WordPiece), independently of ``beam_pipelines``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from trainer import hf_weights
from trainer.config import BertConfig
from trainer.export import export_weights

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HINDI_WORDS = ["भारत", "की", "राजधानी", "दिल्ली", "है", "हिन्दी", "भाषा", "में", "कुछ", "शब्द", "यह", "एक", "देश"]
HINDI_CHARS = sorted(set("".join(HINDI_WORDS)) | {"।"})

TINY = BertConfig(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def vocab_tokens(size: int) -> list[str]:
    """``size`` tokens: the specials, Hindi words and characters, their ``##`` forms, then fillers."""
    tokens = SPECIALS + HINDI_WORDS + HINDI_CHARS + [f"##{c}" for c in HINDI_CHARS] + list("abc.,")
    tokens = list(dict.fromkeys(tokens))
    tokens += [f"w{i}" for i in range(size - len(tokens))]
    assert len(tokens) == size, f"size {size} is too small for the fixed tokens ({len(tokens)})"
    return tokens


def write_vocab_dir(path: str, size: int, *, bare: bool = False) -> str:
    """Writes ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``.

    ``bare``: a ``tokenizer.json`` without registered special tokens and without a post-processor.
    """
    tokens = vocab_tokens(size)
    ids = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex("[\t\n\r]"), " "),
            normalizers.Replace(Regex(r"\p{Cc}"), ""),
            normalizers.NFC(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    if not bare:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
        tok.add_special_tokens(SPECIALS)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{t}\n" for t in tokens))
    tok.save(os.path.join(path, "tokenizer.json"))
    special = dict(
        zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], SPECIALS, strict=True)
    )
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special, f)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "BertTokenizerFast",
                "do_lower_case": False,
                "strip_accents": False,
                **special,
            },
            f,
        )
    return path


def random_weights(config: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of every export name (LayerNorm and biases non-trivial too).

    Matrices have a standard deviation of 0.25 (not BERT's 0.02), so that GELU inputs reach
    |x| ~ 1-3, where exact and tanh GELU differ by far more than the 1e-4 tolerance: a test
    with these weights tells the two activations apart.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in hf_weights.native_shapes(config).items():
        scale = 0.2 if name.endswith(("/gamma", "/beta", "bias")) else 0.25
        value = rng.normal(0.0, scale, size=shape)
        if name.endswith("/gamma"):
            value += 1.0
        out[name] = value.astype(np.float32)
    return out


#: What ``trainer.task`` writes to ``training_state.json``.
TRAINING_STATE = {
    "step": 40,
    "examples_seen": 320,
    "train_metrics": {"loss": 6.5, "mlm_loss": 5.8, "mlm_accuracy": 0.05},
    "eval_metrics": {"loss": 6.7, "mlm_loss": 6.0},
    "data_metadata": {
        "format": "bert-pretraining-tfrecord",
        "max_seq_length": 32,
        "max_predictions_per_seq": 5,
        "vocab_size": 120,
        "nsp": True,
        "splits": {"train": {"num_examples": 900}, "validation": {"num_examples": 30}},
    },
    "train_config": {"batch_size": 8, "learning_rate": 0.0001},
    "keras_backend": "tensorflow",
}


def write_export(model_dir: str, config: BertConfig, weights: dict[str, np.ndarray]) -> str:
    """Writes ``model_dir/export`` with the trainer's own writer; returns the export dir."""
    export_dir = os.path.join(model_dir, "export")
    export_weights(weights, config, export_dir, TRAINING_STATE)
    return export_dir


def with_act(config: BertConfig, act: str) -> BertConfig:
    return dataclasses.replace(config, hidden_act=act)
