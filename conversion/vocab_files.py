"""Reads and checks the vocabulary directory; makes the tokenizer files of the Hugging Face folder.

The vocabulary stage writes ``vocab/{vocab.txt, tokenizer.json, tokenizer_config.json,
special_tokens_map.json}`` (docs/data_format.md). ``tokenizer.json`` carries the normalizer
and pre-tokenizer that made the training data (NFC, control characters removed, format
characters such as ZWJ kept, nothing lowercased, no accent stripped).

transformers 5's ``BertTokenizer`` (``BertTokenizerFast`` is an alias) rebuilds its pipeline
from ``vocab.txt`` with ``BertNormalizer``, whose text cleaning deletes format characters and
which skips NFC: it would tokenize some Hindi text differently from the training data. The
written ``tokenizer_config.json`` therefore names ``PreTrainedTokenizerFast``, which loads
``tokenizer.json`` as it is; ``do_lower_case`` and ``strip_accents`` (false for this
project's vocabulary) are recorded as that normalizer does them, for readers of the file, and
``model_input_names`` keeps ``token_type_ids``.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from trainer import fileio

VOCAB_TXT = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
REQUIRED_FILES = (VOCAB_TXT, TOKENIZER_JSON)

#: role in ``special_tokens_map.json`` -> token (docs/data_format.md: ids 0-4 in this order).
SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The vocabulary directory's content.

    Attributes:
        directory: where it was read.
        tokens: every token, id = position (``vocab.txt``).
        tokenizer_json: ``tokenizer.json`` as text.
        special_tokens: role -> token.
    """

    directory: str
    tokens: tuple[str, ...]
    tokenizer_json: str
    special_tokens: dict[str, str]

    @property
    def size(self) -> int:
        return len(self.tokens)

    def token_id(self, role: str) -> int:
        return self.tokens.index(self.special_tokens[role])


def read_vocabulary(vocab_dir: str) -> Vocabulary:
    """Reads and checks a vocabulary directory.

    Raises:
        FileNotFoundError: listing every missing required file.
        ValueError: when ``tokenizer.json`` and ``vocab.txt`` disagree, a token repeats, or a
            special token is absent; the message lists the differences.
    """
    paths = {name: fileio.join(vocab_dir, name) for name in REQUIRED_FILES}
    missing = [path for path in paths.values() if not fileio.exists(path)]
    if missing:
        raise FileNotFoundError(f"vocabulary directory {vocab_dir} lacks {missing}")
    tokens = tuple(line.rstrip("\r") for line in fileio.read_text(paths[VOCAB_TXT]).split("\n"))
    tokens = tokens[:-1] if tokens and tokens[-1] == "" else tokens
    problems = []
    repeated = sorted(t for t, n in collections.Counter(tokens).items() if n > 1)
    if repeated:
        problems.append(f"{paths[VOCAB_TXT]} repeats token(s) {repeated[:10]}")
    tokenizer_json = fileio.read_text(paths[TOKENIZER_JSON])
    try:
        model = json.loads(tokenizer_json)["model"]
        tj_vocab = model["vocab"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{paths[TOKENIZER_JSON]}: not a tokenizers file with a model vocabulary ({e})"
        ) from e
    if model.get("type") != "WordPiece":
        problems.append(f"{paths[TOKENIZER_JSON]}: model type {model.get('type')!r}, expected 'WordPiece'")
    if len(tj_vocab) != len(tokens):
        problems.append(
            f"{paths[TOKENIZER_JSON]} has {len(tj_vocab)} tokens, {paths[VOCAB_TXT]} has {len(tokens)}"
        )
    differing = [(t, i, tj_vocab.get(t)) for i, t in enumerate(tokens) if tj_vocab.get(t) != i]
    if differing and len(tj_vocab) == len(tokens):
        problems.append(
            f"{len(differing)} token id(s) differ between {VOCAB_TXT} and {TOKENIZER_JSON} "
            f"(token, vocab.txt id, tokenizer.json id): {differing[:5]}"
        )
    special = dict(SPECIAL_TOKENS)
    map_path = fileio.join(vocab_dir, SPECIAL_TOKENS_MAP)
    if fileio.exists(map_path):
        for role, value in json.loads(fileio.read_text(map_path)).items():
            if role in special:
                special[role] = value["content"] if isinstance(value, dict) else value
    absent = sorted(token for token in special.values() if token not in tokens)
    if absent:
        problems.append(f"special token(s) {absent} not in {paths[VOCAB_TXT]}")
    if problems:
        raise ValueError(f"bad vocabulary directory {vocab_dir}: " + "; ".join(problems))
    return Vocabulary(
        directory=vocab_dir, tokens=tokens, tokenizer_json=tokenizer_json, special_tokens=special
    )


def complete_tokenizer_json(vocab: Vocabulary) -> tuple[str, list[str]]:
    """``tokenizer.json`` for the Hugging Face folder, and notes on what had to be added.

    The vocabulary stage's file is copied unchanged. A file made elsewhere may lack what
    transformers relies on; then, and only then, the converter adds it and says so:

    - the five special tokens registered as special (else ``[MASK]`` typed in a sentence is
      split into ``[``, ``MASK``, ``]`` and fill-mask finds no mask);
    - a post-processor adding ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with token types
      0 and 1, as BERT was trained.

    The normalizer, pre-tokenizer and model are never changed.
    """
    from tokenizers import Tokenizer, processors

    data = json.loads(vocab.tokenizer_json)
    registered = {t["content"] for t in data.get("added_tokens") or [] if t.get("special")}
    missing = [t for t in vocab.special_tokens.values() if t not in registered]
    notes = []
    if not missing and data.get("post_processor"):
        return vocab.tokenizer_json, notes
    tokenizer = Tokenizer.from_str(vocab.tokenizer_json)
    if missing:
        tokenizer.add_special_tokens(missing)
        notes.append(f"tokenizer.json: registered {missing} as special tokens")
    if not data.get("post_processor"):
        cls, sep = vocab.special_tokens["cls_token"], vocab.special_tokens["sep_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab.tokens.index(cls)), (sep, vocab.tokens.index(sep))],
        )
        notes.append(f"tokenizer.json: added the post-processor {cls} A {sep} / {cls} A {sep} B {sep}")
    return tokenizer.to_str(pretty=True), notes


def _normalizer_steps(node) -> list[dict]:
    """Every normalizer object inside ``tokenizer.json``'s ``normalizer`` (Sequences flattened)."""
    if not isinstance(node, dict):
        return []
    return [node] + [step for child in node.get("normalizers") or [] for step in _normalizer_steps(child)]


def case_and_accents(vocab: Vocabulary) -> dict[str, bool]:
    """``do_lower_case`` and ``strip_accents`` as ``tokenizer.json``'s normalizer does them.

    False for the vocabulary stage's tokenizer (NFC and control characters only).
    """
    steps = _normalizer_steps(json.loads(vocab.tokenizer_json).get("normalizer"))
    bert = [n for n in steps if n.get("type") == "BertNormalizer"]
    lower = any(n.get("type") == "Lowercase" for n in steps) or any(n.get("lowercase") for n in bert)
    # BertNormalizer with strip_accents null strips accents whenever it lowercases (as BERT does).
    strip = any(n.get("type") == "StripAccents" for n in steps) or any(
        n.get("strip_accents") or (n.get("strip_accents") is None and n.get("lowercase")) for n in bert
    )
    return {"do_lower_case": bool(lower), "strip_accents": bool(strip)}


def tokenizer_config(vocab: Vocabulary, *, model_max_length: int) -> dict:
    """The ``tokenizer_config.json`` of the Hugging Face folder (see the module docstring)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **case_and_accents(vocab),
        "tokenize_chinese_chars": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **vocab.special_tokens,
    }


def tokenizer_files(vocab: Vocabulary, *, model_max_length: int) -> tuple[dict[str, bytes], list[str]]:
    """Every tokenizer file of the Hugging Face folder, by name, and notes on ``tokenizer.json``."""

    def as_json(obj) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    tokenizer_json, notes = complete_tokenizer_json(vocab)
    return {
        VOCAB_TXT: "".join(f"{t}\n" for t in vocab.tokens).encode("utf-8"),
        TOKENIZER_JSON: tokenizer_json.encode("utf-8"),
        TOKENIZER_CONFIG: as_json(tokenizer_config(vocab, model_max_length=model_max_length)),
        SPECIAL_TOKENS_MAP: as_json(vocab.special_tokens),
    }, notes
