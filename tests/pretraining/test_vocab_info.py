"""Reading the vocabulary: special ids from the files, the random pool, the continuation table."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.pretraining.vocab_info import parse_vocab

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "क", "##ि", "है", "##ं"]


def _tokenizer_json(tokens):
    return json.dumps({"model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(tokens)},
                                 "continuing_subword_prefix": "##"}})


def test_ids_pool_and_continuations_come_from_the_vocabulary():
    info = parse_vocab("\n".join(TOKENS) + "\n", _tokenizer_json(TOKENS))
    assert info.vocab_size == 10
    assert info.special_ids == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert info.ordinary_ids() == (6, 7, 8, 9)
    assert list(info.continuation_table()) == [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]


def test_special_ids_are_read_not_assumed():
    tokens = ["[UNK]", "[PAD]", "[SEP]", "[CLS]", "[MASK]", "क"]
    info = parse_vocab("\n".join(tokens), _tokenizer_json(tokens))
    assert info.special_ids == {"[PAD]": 1, "[UNK]": 0, "[CLS]": 3, "[SEP]": 2, "[MASK]": 4}


@pytest.mark.parametrize(
    "vocab, tok, message",
    [
        (TOKENS[1:], TOKENS[1:], r"vocab.txt: special token\(s\) \['\[PAD\]'\] missing"),
        (TOKENS, TOKENS[:-1], "tokenizer.json has 9 tokens but vocab.txt has 10"),
        (TOKENS, TOKENS[:6] + ["है", "##ि", "क", "##ं"], "disagree"),
    ],
)
def test_mismatched_files_are_refused(vocab, tok, message):
    with pytest.raises(ValueError, match=message):
        parse_vocab("\n".join(vocab), _tokenizer_json(tok))


def test_a_non_wordpiece_file_is_refused():
    with pytest.raises(ValueError, match="tokenizer.json: not a WordPiece"):
        parse_vocab("\n".join(TOKENS), "{}")
