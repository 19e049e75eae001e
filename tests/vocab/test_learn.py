"""The pure learner: exact size, reserved ids, canonical and reproducible order."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from beam_pipelines.vocab import learn, tokenizer_spec
from tests.vocab.conftest import synthetic_documents


def _word_counts() -> list[tuple[str, int]]:
    splitter = tokenizer_spec.WordSplitter()
    counts: Counter[str] = Counter()
    for doc in synthetic_documents():
        for line in doc:
            counts.update(splitter.split(line))
    return sorted(counts.items())


def test_replay_gives_each_word_its_count():
    text = "".join(learn.replay([("क", 3), ("ab", 1), ("x" * 10, 5)]))
    assert Counter(text.split()) == {"क": 3, "ab": 1, "x" * 10: 5}


def test_replay_splits_huge_counts_into_bounded_chunks():
    chunks = list(learn.replay([("शब्द", 3_000_000)]))
    assert len(chunks) > 1
    assert max(len(c) for c in chunks) <= (1 << 20) + 5
    assert sum(c.count(" ") for c in chunks) == 3_000_000


def test_exact_size_and_reserved_ids():
    learned = learn.learn_vocabulary(_word_counts(), vocab_size=200, num_unused=3)
    assert len(learned.tokens) == 200 == len(set(learned.tokens))
    assert learned.tokens[:8] == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]")
    assert learned.num_learned == 192
    assert learned.unk_occurrences == 0
    assert learned.word_occurrences == sum(c for _, c in _word_counts())


def test_same_vocabulary_whatever_the_input_order():
    counts = _word_counts()
    first = learn.learn_vocabulary(counts, vocab_size=180)
    assert learn.learn_vocabulary(list(reversed(counts)), vocab_size=180).tokens == first.tokens


def test_same_vocabulary_in_another_process():
    """The trainer's hash maps are seeded per process; the result must not depend on them."""
    code = (
        "import json; from tests.vocab.test_learn import _word_counts; from beam_pipelines.vocab import learn;"
        "print(json.dumps(learn.learn_vocabulary(_word_counts(), vocab_size=180).tokens))"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    here = learn.learn_vocabulary(_word_counts(), vocab_size=180).tokens
    assert [tuple(json.loads(r.stdout)) for r in runs] == [here, here]


def test_canonical_order_most_used_first():
    learned = learn.learn_vocabulary(_word_counts(), vocab_size=180)
    occurrences, _, _ = learn._token_counts(learn.canonical_word_order(_word_counts()), list(learned.tokens))
    ranks = [occurrences[t] for t in learned.tokens[5:]]
    assert ranks == sorted(ranks, reverse=True)


def test_canonical_order_ties():
    order = learn.canonical_order(["##b", "b", "a", "##a", "c"], {"c": 5})
    assert order == ["c", "a", "b", "##a", "##b"]


def test_too_small_input_names_the_flag():
    with pytest.raises(ValueError, match=r"--vocab_size 100000: the input gives only \d+ learnable tokens"):
        learn.learn_vocabulary(_word_counts(), vocab_size=100_000)


def test_vocab_size_below_the_alphabet_is_refused():
    with pytest.raises(ValueError, match="alphabet alone needs"):
        learn.learn_vocabulary(_word_counts(), vocab_size=20)


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="no words"):
        learn.learn_vocabulary([], vocab_size=100)


def test_overlong_words_and_rare_characters_are_left_out():
    counts = _word_counts() + [("क" * 10_000, 50), ("𒀀𒀁", 2), ("ሀሁ", 2)]
    learned = learn.learn_vocabulary(counts, vocab_size=180, limit_alphabet=45)
    assert learned.words_too_long == 1
    assert learned.words_rare_characters >= 2
    assert "𒀀" not in learned.tokens and len(learned.tokens) == 180
    assert max(len(t) for t in learned.tokens) <= tokenizer_spec.MAX_INPUT_CHARS_PER_WORD


def test_count_alphabet_marks_positions_and_skips_overlong_words():
    counts = learn.count_alphabet([("कर", 3), ("रक", 1), ("क" * 101, 9)])
    assert counts == {"क": 3, "##र": 3, "र": 1, "##क": 1}


def test_characters_of_rare_words_still_get_tokens():
    """Counting characters over every word keeps [UNK] as rare as learning from the text does."""
    kept = _word_counts()
    rare = [("ज़ूम", 1), ("ॐ", 1)]
    alphabet = learn.count_alphabet(kept + rare)
    learned = learn.learn_vocabulary(kept, vocab_size=180, alphabet_counts=alphabet)
    assert {"ज", "##\u093c", "##ू", "##म", "ॐ"} <= set(learned.tokens)
    assert "##ॐ" not in learned.tokens
    plain = learn.learn_vocabulary(kept, vocab_size=180)
    assert "ॐ" not in plain.tokens
