"""What the pretraining stage needs from ``vocab.txt`` and ``tokenizer.json``. Pure Python."""

from __future__ import annotations

import dataclasses
import json

from beam_pipelines.pretraining.masking import MaskingSpec

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """The vocabulary as the instance algorithm sees it.

    Attributes:
        tokens: the tokens in id order (``vocab.txt``).
        special_ids: id of each special token, read from the vocabulary.
        continuing_prefix: the word-piece continuation prefix (``##``).
    """

    tokens: tuple[str, ...]
    special_ids: dict[str, int]
    continuing_prefix: str = "##"

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def ordinary_ids(self) -> tuple[int, ...]:
        """Ids a random replacement may use: not special, not ``[unusedN]``."""
        excluded = set(self.special_ids.values())
        return tuple(
            i for i, t in enumerate(self.tokens)
            if i not in excluded and not (t.startswith("[unused") and t.endswith("]"))
        )

    def continuation_table(self) -> bytes:
        """Byte ``i`` is 1 when token ``i`` continues a word."""
        prefix = self.continuing_prefix
        return bytes(1 if t.startswith(prefix) and len(t) > len(prefix) else 0 for t in self.tokens)

    def masking_spec(self, *, masked_lm_prob: float, max_predictions_per_seq: int,
                     whole_word_masking: bool) -> MaskingSpec:
        return MaskingSpec(
            masked_lm_prob=masked_lm_prob,
            max_predictions_per_seq=max_predictions_per_seq,
            cls_id=self.special_ids["[CLS]"],
            sep_id=self.special_ids["[SEP]"],
            mask_id=self.special_ids["[MASK]"],
            random_token_ids=self.ordinary_ids(),
            continuation=self.continuation_table(),
            whole_word_masking=whole_word_masking,
        )


def parse_vocab(vocab_text: str, tokenizer_json: str, *, vocab_name: str = "vocab.txt",
                tokenizer_name: str = "tokenizer.json") -> VocabInfo:
    """Reads the vocabulary and checks that ``tokenizer.json`` agrees with it.

    Raises:
        ValueError: naming the file, when a special token is missing, when the two files
            give a token a different id, or when the sizes differ.
    """
    tokens = tuple(line.rstrip("\r") for line in vocab_text.split("\n"))
    if tokens and tokens[-1] == "":
        tokens = tokens[:-1]
    index = {t: i for i, t in enumerate(tokens)}
    missing = [t for t in SPECIAL_TOKENS if t not in index]
    if missing:
        raise ValueError(f"{vocab_name}: special token(s) {missing} missing")
    special_ids = {t: index[t] for t in SPECIAL_TOKENS}
    try:
        model = json.loads(tokenizer_json)["model"]
        tok_vocab = model["vocab"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{tokenizer_name}: not a WordPiece tokenizers file ({e})") from e
    if len(tok_vocab) != len(tokens):
        raise ValueError(f"{tokenizer_name} has {len(tok_vocab)} tokens but {vocab_name} has {len(tokens)}")
    wrong = [t for t in tokens if tok_vocab.get(t) != index[t]]
    if wrong:
        raise ValueError(f"{tokenizer_name} and {vocab_name} disagree on the ids of {wrong[:5]}")
    prefix = model.get("continuing_subword_prefix") or "##"
    return VocabInfo(tokens=tokens, special_ids=special_ids, continuing_prefix=prefix)
