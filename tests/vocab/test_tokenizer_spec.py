"""The tokenizer definition: normalizer, pre-tokenizer, special tokens, files."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from beam_pipelines.corpus import normalize
from beam_pipelines.vocab import tokenizer_spec

TRICKY = {
    "zwj_zwnj_kept": "क्\u200dष और क्\u200cष",
    "nukta_precomposed_to_nfc": "\u0958\u0959 \u095c",
    "combining_after_control": "e\u0000\u0301 \u0915\u0007\u093c",
    "whitespace_controls": "a\tb\nc\u000bd\u000ce\rf\u001cg\u001fh\u0085i",
    "other_controls": "x\u0001y\u007fz\u0084w\u009fv",
    "format_chars_kept": "soft\u00adhyphen \ufeffbom lrm\u200e",
    "no_lowercase_no_accent_strip": "ÉCOLE Ångström हिन्दी भाषा में कुछ शब्द",
    "compatibility_not_folded": "ﬁ ① Ｈ",
    "astral_and_rare_scripts": "𒀀 ཀྵ ሀ 한국어 中文 😀 ‍👩‍💻",
    "danda_and_pipes": "यह है। वह था॥ और|या",
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_normalizer_equals_corpus_normalization(name):
    text = TRICKY[name]
    assert tokenizer_spec.build_normalizer().normalize_str(text) == normalize.normalize_text(text)


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_words_of_corpus_text_equal_words_of_raw_text(name):
    """Counting words in the corpus stage's output sees what tokenizing the raw text sees."""
    splitter = tokenizer_spec.WordSplitter()
    text = TRICKY[name]
    corpus_lines = normalize.normalize_document(text)
    assert [w for line in corpus_lines for w in splitter.split(line)] == splitter.split(text)


@pytest.mark.parametrize(
    "text, words",
    [
        ("यह है। वह था॥", ["यह", "है", "।", "वह", "था", "॥"]),
        ("Hello, world!", ["Hello", ",", "world", "!"]),
        ("भारत(India) 2024-25", ["भारत", "(", "India", ")", "2024", "-", "25"]),
        ("中文abc", ["中", "文", "abc"]),
        ("क्\u200dष", ["क्\u200dष"]),
        ("a\u00a0b\u3000c", ["a", "b", "c"]),
        ("$5 + 3 = ८", ["$", "5", "+", "3", "=", "८"]),
    ],
)
def test_pre_tokenizer_splits_like_bert(text, words):
    assert tokenizer_spec.WordSplitter().split(text) == words


def _tiny_vocab() -> list[str]:
    return tokenizer_spec.reserved_tokens(2) + ["यह", "है", "।", "भा", "##रत", "##षा", "a", "##b"]


def test_tokenizer_adds_cls_sep_and_type_ids():
    tokenizer = tokenizer_spec.build_tokenizer(_tiny_vocab())
    encoding = tokenizer.encode("यह भारत है।", "भाषा")
    assert encoding.tokens == ["[CLS]", "यह", "भा", "##रत", "है", "।", "[SEP]", "भा", "##षा", "[SEP]"]
    assert encoding.type_ids == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert encoding.ids[0] == 2 and encoding.ids[6] == 3
    assert tokenizer.decode(encoding.ids) == "यह भारत है । भाषा"


def test_tokenizer_unknown_and_overlong_words():
    tokenizer = tokenizer_spec.build_tokenizer(_tiny_vocab())
    assert tokenizer.encode("xyz ab " + "a" * 101, add_special_tokens=False).tokens == ["[UNK]", "a", "##b", "[UNK]"]
    assert tokenizer.encode("[MASK] यह", add_special_tokens=False).ids == [4, 7]


def test_tokenizer_files_round_trip(tmp_path):
    vocab = _tiny_vocab()
    files = tokenizer_spec.tokenizer_files(vocab)
    assert sorted(files) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert files["vocab.txt"].decode("utf-8").split("\n")[:-1] == vocab
    (tmp_path / "tokenizer.json").write_bytes(files["tokenizer.json"])
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.get_vocab() == {t: i for i, t in enumerate(vocab)}
    config = json.loads(files["tokenizer_config.json"])
    assert config["do_lower_case"] is False and config["strip_accents"] is False
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.parametrize(
    "vocab, message",
    [
        (["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"], "must start with"),
        (list(tokenizer_spec.SPECIAL_TOKENS) + ["a", "a"], "repeated"),
        (list(tokenizer_spec.SPECIAL_TOKENS) + ["a b"], "whitespace"),
    ],
)
def test_bad_vocabularies_are_refused(vocab, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_spec.tokenizer_files(vocab)
