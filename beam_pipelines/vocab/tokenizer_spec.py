"""The tokenizer's text handling, shared by word counting, vocabulary learning and tokenization.

One definition of the normalizer and the pre-tokenizer (Hugging Face ``tokenizers`` objects) is
used to count words, to learn the vocabulary and, through ``tokenizer.json``, to tokenize the data,
so counting and tokenizing can never disagree.

- Normalizer: the corpus stage's rule. Control characters (Unicode category Cc) are removed, the
  ones ``str.isspace`` calls whitespace (tab, line feed, U+001C-U+001F, U+0085) become a space,
  then the text is put in NFC. Nothing is lowercased and no
  combining mark is stripped; format characters (Cf, e.g. ZWJ/ZWNJ, which Devanagari uses to pick
  a conjunct's form) are kept.
- Pre-tokenizer: google-research/bert's basic tokenization without its text cleaning: every CJK
  ideograph is a word of its own, then text is split on whitespace and around every punctuation
  character (ASCII symbols and Unicode category P, so the danda ``।`` splits words).
- Model: WordPiece, ``##`` continuation prefix, a word of more than 100 characters is ``[UNK]``.
- Post-processor: ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` with type ids 0 and 1.
- Decoder: WordPiece (joins ``##`` pieces).

This module has no Beam or TensorFlow import.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
CONTINUING_SUBWORD_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100
MODEL_MAX_LENGTH = 512

# The controls that Python's str.isspace calls whitespace separate words: they become a space
# (the corpus stage's rule, beam_pipelines/corpus/normalize.py).
_WHITESPACE_CONTROLS = "[\t-\r\u001c-\u001f\u0085]"
# google-research/bert's _is_chinese_char ranges (CJK ideographs, not kana or hangul).
_CJK_IDEOGRAPH = (
    "[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]"
)


def unused_tokens(num_unused: int) -> list[str]:
    """Returns the reserved entries ``[unused0]`` .. ``[unused{num_unused-1}]``."""
    return [f"[unused{i}]" for i in range(num_unused)]


def reserved_tokens(num_unused: int) -> list[str]:
    """Returns the tokens that precede the learned ones: the special tokens, then the unused ones."""
    return list(SPECIAL_TOKENS) + unused_tokens(num_unused)


def build_normalizer() -> normalizers.Normalizer:
    """Returns the normalizer: whitespace controls to a space, other controls removed, then NFC.

    Controls are removed before NFC, so that a mark separated from its base by a control
    character still composes with it.
    """
    return normalizers.Sequence(
        [
            normalizers.Replace(Regex(_WHITESPACE_CONTROLS), " "),
            normalizers.Replace(Regex(r"\p{Cc}"), ""),
            normalizers.NFC(),
        ]
    )


def build_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Returns the pre-tokenizer: CJK ideographs isolated, then BERT's whitespace/punctuation split."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CJK_IDEOGRAPH), behavior="isolated"),
            pre_tokenizers.BertPreTokenizer(),
        ]
    )


class WordSplitter:
    """Splits raw text into the words that the vocabulary is learned from.

    Holds the normalizer and pre-tokenizer of :func:`build_tokenizer`; not picklable, so a Beam
    DoFn builds one in ``setup()``.
    """

    def __init__(self) -> None:
        self._normalizer = build_normalizer()
        self._pre_tokenizer = build_pre_tokenizer()

    def split(self, text: str) -> list[str]:
        """Returns the words of ``text``, in order."""
        normalized = self._normalizer.normalize_str(text)
        return [word for word, _ in self._pre_tokenizer.pre_tokenize_str(normalized)]


def build_tokenizer(vocab: Sequence[str]) -> Tokenizer:
    """Builds the full tokenizer for ``vocab`` (token strings in id order).

    Args:
        vocab: every token, id = position; must start with :data:`SPECIAL_TOKENS`.

    Raises:
        ValueError: if the special tokens are not at ids 0-4 or a token repeats.
    """
    if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"vocabulary must start with {list(SPECIAL_TOKENS)}, got {list(vocab[:5])}")
    ids = {token: i for i, token in enumerate(vocab)}
    if len(ids) != len(vocab):
        raise ValueError("vocabulary has repeated tokens")
    tokenizer = Tokenizer(
        models.WordPiece(
            ids,
            unk_token=UNK,
            continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX,
            max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
        )
    )
    tokenizer.normalizer = build_normalizer()
    tokenizer.pre_tokenizer = build_pre_tokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUING_SUBWORD_PREFIX)
    # Registered as special so that "[MASK]" typed in text stays one token and decoding can skip them.
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def special_tokens_map() -> dict[str, str]:
    """Returns the content of ``special_tokens_map.json``."""
    return {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}


def tokenizer_config() -> dict[str, object]:
    """Returns the content of ``tokenizer_config.json``.

    The class is ``PreTrainedTokenizerFast``, which runs ``tokenizer.json`` as it is. In
    transformers 5, ``BertTokenizerFast`` rebuilds BERT's own normalizer instead, which deletes
    ZWJ/ZWNJ and skips NFC; ``BertTokenizerFast.from_pretrained(dir)`` still loads this folder
    and agrees on text without those characters. The keys below keep the cased, accent-keeping
    settings visible to tools that read them.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "do_lower_case": False,
        "strip_accents": False,
        "tokenize_chinese_chars": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        **special_tokens_map(),
    }


def tokenizer_files(vocab: Sequence[str]) -> dict[str, bytes]:
    """Returns every file of the tokenizer directory, by name, as bytes.

    ``vocab.txt`` (one token a line, line number = id), ``tokenizer.json``,
    ``tokenizer_config.json`` and ``special_tokens_map.json``.
    """

    def as_json(obj: object) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    for token in vocab:
        if not token or any(ch.isspace() for ch in token):
            raise ValueError(f"token {token!r} is empty or holds whitespace; vocab.txt cannot store it")
    tokenizer = build_tokenizer(vocab)
    return {
        "vocab.txt": "".join(f"{token}\n" for token in vocab).encode("utf-8"),
        "tokenizer.json": tokenizer.to_str(pretty=True).encode("utf-8"),
        "tokenizer_config.json": as_json(tokenizer_config()),
        "special_tokens_map.json": as_json(special_tokens_map()),
    }


def read_vocab_txt(lines: Iterable[str]) -> list[str]:
    """Parses the lines of a ``vocab.txt`` into tokens in id order."""
    return [line.rstrip("\n") for line in lines if line.rstrip("\n")]
