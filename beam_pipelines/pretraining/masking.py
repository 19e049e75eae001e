"""Masked-LM target selection, as in google-research/bert ``create_masked_lm_predictions``.

Pure Python on token ids; no Beam, no TensorFlow. The random draws are made in the
reference's order, so with ``random_token_ids`` covering the whole vocabulary and
word-piece masking the output equals the reference's for the same ``random.Random``.

Differences from the reference (docs/pretraining.md says why):

* the 10% random replacement draws from ``random_token_ids`` (ordinary tokens: no
  [PAD]/[UNK]/[CLS]/[SEP]/[MASK], no ``[unusedN]``), not from the whole vocabulary;
* under whole-word masking the 80/10/10 choice is made once per word, not per piece.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

MASK_TOKEN_PROB = 0.8
KEEP_PROB = 0.1
RANDOM_TOKEN_PROB = 0.1


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """What the masking needs to know about the vocabulary and the options.

    Attributes:
        masked_lm_prob: share of tokens to predict (before the cap).
        max_predictions_per_seq: the cap on predictions per sequence.
        cls_id: id of [CLS] (never a target).
        sep_id: id of [SEP] (never a target).
        mask_id: id of [MASK].
        random_token_ids: ids the 10% random replacement draws from.
        continuation: ``continuation[i]`` is true when token ``i`` continues a word
            (a ``##`` piece); used only with whole-word masking.
        whole_word_masking: mask every piece of a word together.
    """

    masked_lm_prob: float
    max_predictions_per_seq: int
    cls_id: int
    sep_id: int
    mask_id: int
    random_token_ids: tuple[int, ...]
    continuation: bytes = b""
    whole_word_masking: bool = False

    def __post_init__(self):
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1, got {self.max_predictions_per_seq}")
        if not self.random_token_ids:
            raise ValueError("random_token_ids is empty: the vocabulary has no ordinary token")
        if self.whole_word_masking and not self.continuation:
            raise ValueError("whole_word_masking needs the continuation table of the vocabulary")


def num_to_predict(length: int, *, masked_lm_prob: float, max_predictions_per_seq: int) -> int:
    """The reference's number of targets for a sequence of ``length`` tokens ([CLS]/[SEP] included)."""
    return min(max_predictions_per_seq, max(1, int(round(length * masked_lm_prob))))


def create_masked_lm_predictions(
    tokens: Sequence[int], spec: MaskingSpec, rng: random.Random
) -> tuple[list[int], list[int], list[int]]:
    """Chooses and replaces the masked-LM targets of one sequence.

    Args:
        tokens: token ids of the whole sequence, [CLS] and [SEP] included.
        spec: the masking options.
        rng: the random source; consumed in the reference's order.

    Returns:
        ``(output_tokens, positions, labels)``: the sequence after replacement, the
        target positions in ascending order and the original ids at those positions.
    """
    cls_id, sep_id = spec.cls_id, spec.sep_id
    n_predict = min(spec.max_predictions_per_seq, max(1, int(round(len(tokens) * spec.masked_lm_prob))))
    output = list(tokens)
    mask_id = spec.mask_id
    pool = spec.random_token_ids
    top = len(pool) - 1
    rand = rng.random
    randint = rng.randint

    if not spec.whole_word_masking:
        # One piece per candidate: the reference's loop reduces to the first n_predict
        # shuffled candidates (shuffling a list of ints draws exactly as a list of lists).
        cand = [i for i, t in enumerate(tokens) if t != cls_id and t != sep_id]
        rng.shuffle(cand)
        chosen = cand[:n_predict]
        for index in chosen:
            if rand() < 0.8:
                output[index] = mask_id
            elif rand() < 0.5:
                pass
            else:
                output[index] = pool[randint(0, top)]
        chosen.sort()
        return output, chosen, [tokens[i] for i in chosen]

    continuation = spec.continuation
    words: list[list[int]] = []
    for i, t in enumerate(tokens):
        if t == cls_id or t == sep_id:
            continue
        if words and continuation[t]:
            words[-1].append(i)
        else:
            words.append([i])
    rng.shuffle(words)
    chosen = []
    for word in words:
        if len(chosen) >= n_predict:
            break
        # A word that would pass the cap is skipped, as in the reference; words never
        # overlap, so the reference's "already covered" test cannot trigger.
        if len(chosen) + len(word) > n_predict:
            continue
        chosen.extend(word)
        if rand() < 0.8:
            for index in word:
                output[index] = mask_id
        elif rand() < 0.5:
            pass
        else:
            for index in word:
                output[index] = pool[randint(0, top)]
    chosen.sort()
    return output, chosen, [tokens[i] for i in chosen]
