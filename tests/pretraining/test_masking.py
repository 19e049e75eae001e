"""Masked-LM target selection: exact counts, excluded tokens, 80/10/10, whole words."""

from __future__ import annotations

import random

import pytest

from beam_pipelines.pretraining.masking import MaskingSpec, create_masked_lm_predictions, num_to_predict

CLS, SEP, MASK = 2, 3, 4


def _spec(**kw) -> MaskingSpec:
    base = dict(masked_lm_prob=0.15, max_predictions_per_seq=20, cls_id=CLS, sep_id=SEP, mask_id=MASK,
                random_token_ids=tuple(range(10, 100)))
    base.update(kw)
    return MaskingSpec(**base)


@pytest.mark.parametrize(
    "length, prob, cap, expected",
    [
        (3, 0.15, 20, 1),  # max(1, round(0.45)) = 1
        (10, 0.15, 20, 2),  # round(1.5) = 2 (banker's rounding, as the reference under Python 3)
        (30, 0.15, 20, 4),  # round(4.5) = 4
        (128, 0.15, 20, 19),  # round(19.2)
        (140, 0.15, 20, 20),  # capped
        (512, 0.15, 76, 76),
    ],
)
def test_num_to_predict_is_the_reference_formula(length, prob, cap, expected):
    assert num_to_predict(length, masked_lm_prob=prob, max_predictions_per_seq=cap) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(masked_lm_prob=0.0), "masked_lm_prob"),
        (dict(max_predictions_per_seq=0), "max_predictions_per_seq"),
        (dict(random_token_ids=()), "random_token_ids"),
        (dict(whole_word_masking=True), "continuation"),
    ],
)
def test_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _spec(**kwargs)


def test_targets_skip_cls_and_sep_and_are_sorted():
    tokens = [CLS] + list(range(50, 70)) + [SEP] + list(range(70, 80)) + [SEP]
    rng = random.Random(0)
    for _ in range(200):
        out, positions, labels = create_masked_lm_predictions(tokens, _spec(masked_lm_prob=0.5), rng)
        assert positions == sorted(set(positions))
        assert len(positions) == num_to_predict(len(tokens), masked_lm_prob=0.5, max_predictions_per_seq=20)
        assert all(tokens[p] not in (CLS, SEP) for p in positions)
        assert labels == [tokens[p] for p in positions]
        untouched = set(range(len(tokens))) - set(positions)
        assert all(out[i] == tokens[i] for i in untouched)


def test_random_replacement_draws_only_from_the_pool():
    tokens = [CLS] + [7] * 60 + [SEP]  # 7 is not in the pool
    rng = random.Random(1)
    replaced = set()
    for _ in range(300):
        out, positions, _ = create_masked_lm_predictions(tokens, _spec(random_token_ids=(11, 12)), rng)
        replaced.update(out[p] for p in positions if out[p] not in (MASK, 7))
    assert replaced == {11, 12}


def test_whole_word_masking_decides_per_word_and_never_splits():
    # ids >= 60 are "##" continuations; words: 50 61 62 | 51 | 52 63 | ...
    continuation = bytes(1 if i >= 60 else 0 for i in range(100))
    body = [50, 61, 62, 51, 52, 63, 53, 64, 65, 66, 54, 55, 67] * 4
    tokens = [CLS] + body + [SEP]
    spec = _spec(whole_word_masking=True, continuation=continuation, masked_lm_prob=0.3)
    words = []
    for i, t in enumerate(tokens):
        if t in (CLS, SEP):
            continue
        if words and continuation[t]:
            words[-1].append(i)
        else:
            words.append([i])
    rng = random.Random(3)
    mixed = 0
    for _ in range(500):
        out, positions, _ = create_masked_lm_predictions(tokens, spec, rng)
        chosen = set(positions)
        assert len(positions) <= num_to_predict(len(tokens), masked_lm_prob=0.3, max_predictions_per_seq=20)
        for word in words:
            hit = [i in chosen for i in word]
            assert all(hit) or not any(hit), f"word {word} split: {positions}"
            if all(hit):
                masked = [out[i] == MASK for i in word]
                assert all(masked) or not any(masked)
                mixed += 0 < sum(out[i] == tokens[i] for i in word) < len(word)
    # A word replaced at random may keep a piece only by chance (pool of 90 ids).
    assert mixed < 20
