"""The model card (``README.md``) of the converted folder: data, training, final metrics, usage.

Built from the export's ``bert_config.json`` and ``training_state.json`` (step, examples seen,
final metrics, and the copy of the data's ``metadata.json``). Keys the card does not know are
still listed, so nothing the trainer records is lost; keys it expects and does not find are
left out rather than guessed.
"""

from __future__ import annotations

import json
from typing import Any

#: Keys of ``training_state.json`` that may hold the data's ``metadata.json`` copy.
_DATA_KEYS = ("data_metadata", "metadata", "data")
#: Keys of ``training_state.json`` with the final metrics, in the card's order.
_METRIC_KEYS = ("train_metrics", "eval_metrics", "final_metrics")
_TITLES = {
    "train_metrics": "Final training metrics (last logged steps)",
    "eval_metrics": "Final evaluation metrics (validation split)",
    "train_config": "Training options",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True, ensure_ascii=False) + "`"
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    if not rows:
        return []
    return ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows] + [""]


def _data_section(metadata: dict | None) -> list[str]:
    lines = ["## Training data", ""]
    if not metadata:
        return lines + ["The training state records no data metadata.", ""]
    rows = [
        (key, metadata[key])
        for key in (
            "format",
            "max_seq_length",
            "max_predictions_per_seq",
            "vocab_size",
            "nsp",
            "masking",
            "short_seq_prob",
            "dupe_factor",
            "seed",
        )
        if key in metadata
    ]
    for split, info in sorted((metadata.get("splits") or {}).items()):
        if isinstance(info, dict) and "num_examples" in info:
            rows.append((f"{split} examples", info["num_examples"]))
    counts = metadata.get("input_counts") or {}
    for key, value in counts.items():
        rows.append((f"input: {key.replace('_', ' ')}", value))
    return lines + _table(rows)


def _training_section(state: dict) -> list[str]:
    lines = ["## Training", ""]
    scalars = [(k, v) for k, v in sorted(state.items()) if k not in _DATA_KEYS and not isinstance(v, dict)]
    lines += _table(scalars) or ["No training state was recorded.", ""]
    tables = {k: v for k, v in state.items() if k not in _DATA_KEYS and isinstance(v, dict)}
    # Final metrics first, then any other recorded table (the training options).
    for key in sorted(
        tables, key=lambda k: (k not in _METRIC_KEYS, _METRIC_KEYS.index(k) if k in _METRIC_KEYS else 0, k)
    ):
        title = _TITLES.get(key, key.replace("_", " "))
        lines += [f"### {title}", ""] + (_table(sorted(tables[key].items())) or ["None recorded.", ""])
    return lines


def render(
    *,
    config: dict,
    training_state: dict,
    vocab_size: int,
    model_path: str = "PATH",
    language: str | None = "hi",
    do_lower_case: bool = False,
    strip_accents: bool = False,
) -> str:
    """Returns the model card text.

    Args:
        config: the ``bert_config.json`` dict.
        training_state: the ``training_state.json`` dict.
        vocab_size: tokens in ``vocab.txt``.
        model_path: where the folder is published, for the usage example.
        language: ISO code for the card's metadata header (None to omit it).
        do_lower_case, strip_accents: what the tokenizer's normalizer does.
    """
    metadata = next((training_state[k] for k in _DATA_KEYS if isinstance(training_state.get(k), dict)), None)
    header = ["---"]
    if language:
        header += [f"language: {language}"]
    header += [
        "library_name: transformers",
        "pipeline_tag: fill-mask",
        "tags:",
        "- bert",
        "- fill-mask",
        "---",
        "",
    ]
    size = (
        f"{config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"{config['num_attention_heads']} attention heads, feed-forward {config['intermediate_size']}"
    )
    lines = header + [
        "# BERT for masked-LM pretraining",
        "",
        f"A BERT encoder ({size}) with its masked-LM and next-sentence heads (`BertForPreTraining`), "
        f"pretrained with masked-LM{' and next-sentence prediction' if config.get('use_nsp', True) else ' only (no NSP)'} "
        "and converted from the trainer's export. "
        f"Vocabulary: {vocab_size} WordPiece tokens, {'lowercased' if do_lower_case else 'cased'}, "
        f"{'accents stripped' if strip_accents else 'accents kept (no accent stripping)'}.",
        "",
        "## Model",
        "",
    ]
    lines += _table(sorted(config.items()))
    lines += _data_section(metadata)
    lines += _training_section(training_state)
    lines += [
        "## How to use",
        "",
        "```python",
        "from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline",
        "",
        f"tokenizer = AutoTokenizer.from_pretrained({model_path!r})",
        f"model = AutoModelForMaskedLM.from_pretrained({model_path!r})",
        'fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)',
        'print(fill(f"भारत की राजधानी {tokenizer.mask_token} है।"))',
        "```",
        "",
        "`AutoModelForPreTraining` gives both heads, `AutoModel` the encoder and pooler.",
        "The tokenizer loads `tokenizer.json` as it is (class `PreTrainedTokenizerFast`), so it",
        "normalizes text exactly as the training data was (NFC, control characters removed,",
        "zero-width joiners kept); transformers' `BertTokenizer` would rebuild a different",
        f"normalizer. `hidden_act` is the activation used in training (`{config['hidden_act']}`).",
        "",
    ]
    return "\n".join(lines)
