"""The vocab stage end to end: flags, files, reproducibility, the three loaders, odd input."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import BertWordPieceTokenizer, Tokenizer

from beam_pipelines import build
from beam_pipelines.vocab import stage, tokenizer_spec
from tests.vocab.conftest import run_vocab_stage, synthetic_documents, write_corpus

VOCAB_FILES = ("special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _config(*flags: str) -> stage.VocabConfig:
    args, _ = build.make_parser().parse_known_args(["--stages", "vocab", "--output_dir", "/tmp/x", *flags])
    return stage.config_from_args(args)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--vocab_size", "5"], "--vocab_size must be >= 6"),
        (["--vocab_size", "10", "--num_unused", "5"], "--vocab_size must be >= 11"),
        (["--num_unused", "-1"], "--num_unused"),
        (["--min_count", "0"], "--min_count"),
        (["--max_words", "0"], "--max_words"),
        (["--min_pair_count", "0"], "--min_pair_count"),
        (["--limit_alphabet", "0"], "--limit_alphabet"),
        (["--num_shards", "0"], "--num_shards"),
    ],
)
def test_bad_flags_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        _config(*flags)


def test_defaults():
    config = _config()
    assert (config.vocab_size, config.min_count, config.num_unused, config.num_shards) == (32000, 1, 0, 4)
    assert config.input_pattern == "/tmp/x/corpus/train-*.txt.gz"
    assert _config("--vocab_input", "/data/*.gz", "--num_shards", "3").input_pattern == "/data/*.gz"


def test_preflight_without_corpus_says_what_to_do(tmp_path):
    args, _ = build.make_parser().parse_known_args(["--stages", "vocab", "--output_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"corpus/train-\*\.txt\.gz.*Run the corpus stage first"):
        stage.preflight(stage.config_from_args(args))


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """The stage run twice on the same synthetic corpus, in two output directories."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        write_corpus(out / "corpus", synthetic_documents(), num_files=3)
        report = run_vocab_stage(out, ["--vocab_size", "150", "--num_unused", "4", "--num_shards", "2"])
        runs.append((out, report))
    return runs


def test_outputs_and_report(synthetic_runs):
    out, report = synthetic_runs[0]
    names = sorted(p.name for p in (out / "vocab").iterdir())
    assert names == sorted([*VOCAB_FILES, "word_counts-00000-of-00002.tsv", "word_counts-00001-of-00002.tsv"])
    vocab = (out / "vocab" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 150
    assert vocab[:9] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]", "[unused3]"]
    assert json.loads((out / "reports" / "vocab.json").read_text()) == report
    counts = report["counts"]
    assert counts["lines"] == sum(len(d) for d in synthetic_documents())
    assert counts["distinct_words_kept"] == counts["learner_words"]
    tsv = [
        line.split("\t")
        for p in sorted((out / "vocab").glob("word_counts-*.tsv"))
        for line in p.read_text(encoding="utf-8").splitlines()
    ]
    assert len(tsv) == counts["distinct_words_kept"]
    assert sum(int(c) for _, c in tsv) == counts["word_occurrences_kept"]
    splitter = tokenizer_spec.WordSplitter()
    expected = Counter(w for doc in synthetic_documents() for line in doc for w in splitter.split(line))
    assert {w: int(c) for w, c in tsv} == dict(expected)


def test_same_input_gives_byte_identical_files(synthetic_runs):
    (first, _), (second, _) = synthetic_runs
    assert _files(first / "vocab") == _files(second / "vocab")


def test_two_workers_give_the_same_files(synthetic_runs, tmp_path):
    first, _ = synthetic_runs[0]
    write_corpus(tmp_path / "corpus", synthetic_documents(), num_files=3)
    run_vocab_stage(
        tmp_path,
        ["--vocab_size", "150", "--num_unused", "4", "--num_shards", "2"],
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    )
    assert _files(tmp_path / "vocab") == _files(first / "vocab")


def test_rerun_with_other_shard_count_removes_stale_shards(tmp_path):
    write_corpus(tmp_path / "corpus", synthetic_documents(), num_files=1)
    run_vocab_stage(tmp_path, ["--vocab_size", "120", "--num_shards", "3"])
    report = run_vocab_stage(tmp_path, ["--vocab_size", "120", "--num_shards", "2"])
    assert sorted(p.name for p in (tmp_path / "vocab").glob("word_counts-*")) == report["word_count_files"]
    assert len(report["stale_word_count_files_removed"]) == 3


def test_too_large_vocab_size_fails_with_a_clear_error(tmp_path):
    write_corpus(tmp_path / "corpus", synthetic_documents(), num_files=1)
    with pytest.raises(Exception, match=r"--vocab_size 5000: the input gives only"):
        run_vocab_stage(tmp_path, ["--vocab_size", "5000"])


def test_rare_scripts_and_a_10000_character_word(tmp_path):
    odd_lines = [
        "क" * 10_000,
        "ཀྵ་ཁ་ག ሀሁሂ 𒀀𒀁𒀂 𐌰𐌱 ᚠᚢᚦ ꦲꦤ 한국어 日本語です 😀👩\u200d💻 ℌ𝔢𝔩𝔩𝔬",
        "مرحبا بالعالم שלום עולם Ελληνικά кириллица ﷺ",
        "\u0915\u093c\u093c\u093c\u094d\u094d \u200c\u200d \u0301\u0301\u0301",
    ]
    docs = synthetic_documents() + [odd_lines, odd_lines]
    write_corpus(tmp_path / "corpus", docs, num_files=2)
    report = run_vocab_stage(tmp_path, ["--vocab_size", "200", "--limit_alphabet", "300"])
    assert report["vocab_size"] == 200
    assert report["counts"]["learner_words_too_long"] == 1
    vocab = (tmp_path / "vocab" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 200 and max(len(t) for t in vocab) <= 100
    tokenizer = Tokenizer.from_file(str(tmp_path / "vocab" / "tokenizer.json"))
    for line in odd_lines:
        encoding = tokenizer.encode(line)
        assert encoding.ids[0] == 2 and encoding.ids[-1] == 3
    assert tokenizer.encode("क" * 10_000, add_special_tokens=False).tokens == ["[UNK]"]


def _google_bert_tokenize(text: str, vocab: dict[str, int]) -> list[int]:
    """google-research/bert's FullTokenizer(do_lower_case=False), re-written for this test."""

    def is_control(ch: str) -> bool:
        return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")

    def is_whitespace(ch: str) -> bool:
        return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"

    def is_punctuation(ch: str) -> bool:
        cp = ord(ch)
        return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or (
            unicodedata.category(ch).startswith("P")
        )

    def is_cjk(ch: str) -> bool:
        cp = ord(ch)
        return any(lo <= cp <= hi for lo, hi in (
            (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))

    cleaned = "".join(
        " " if is_whitespace(ch) else f" {ch} " if is_cjk(ch) else ch
        for ch in text
        if ch not in "\0\ufffd" and not is_control(ch)
    )
    words = []
    for chunk in cleaned.split():
        current = ""
        for ch in chunk:
            if is_punctuation(ch):
                words += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    ids = []
    for word in words:
        if len(word) > 100:
            ids.append(vocab["[UNK]"])
            continue
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[piece])
            start = end
        ids += pieces
    return ids


@pytest.fixture(scope="module")
def hindi_vocab(tmp_path_factory, hindi_documents) -> Path:
    out = tmp_path_factory.mktemp("hindi")
    write_corpus(out / "corpus", hindi_documents, num_files=2)
    run_vocab_stage(out, ["--vocab_size", "8000"])
    return out / "vocab"


def test_three_loaders_agree_on_real_hindi_sentences(hindi_vocab, hindi_sentences):
    from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

    sentences = hindi_sentences[:1500]
    native = Tokenizer.from_file(str(hindi_vocab / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(hindi_vocab))
    assert isinstance(auto, PreTrainedTokenizerFast)
    assert len(auto) == 8000
    bert_fast = BertTokenizerFast.from_pretrained(str(hindi_vocab))
    assert bert_fast.do_lower_case is False and bert_fast.strip_accents is False
    bert_vocab = {t: i for i, t in enumerate((hindi_vocab / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    from_vocab_txt = BertWordPieceTokenizer(str(hindi_vocab / "vocab.txt"), lowercase=False, strip_accents=False)

    format_chars = [s for s in sentences if any(unicodedata.category(ch) == "Cf" for ch in s)]
    plain = [s for s in sentences if s not in format_chars]
    assert len(plain) > 1000
    for sentence in plain:
        ids = native.encode(sentence).ids
        assert auto(sentence)["input_ids"] == ids, sentence
        assert bert_fast(sentence)["input_ids"] == ids, sentence
        assert from_vocab_txt.encode(sentence).ids == ids, sentence
        assert [2, *_google_bert_tokenize(sentence, bert_vocab), 3] == ids, sentence

    # AutoTokenizer runs tokenizer.json as it is, ZWJ/ZWNJ included; BertTokenizerFast rebuilds
    # BERT's own normalizer, which deletes them, until ours is put back.
    for sentence in format_chars:
        assert auto(sentence)["input_ids"] == native.encode(sentence).ids, sentence
    bert_fast.backend_tokenizer.normalizer = native.normalizer
    for sentence in format_chars:
        assert bert_fast(sentence)["input_ids"] == native.encode(sentence).ids, sentence


def test_pairs_match_bert_layout(hindi_vocab):
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(hindi_vocab))
    encoded = auto("यह पहला वाक्य है।", "यह दूसरा है।")
    sep = encoded["input_ids"].index(3)
    assert encoded["input_ids"][0] == 2 and encoded["input_ids"][-1] == 3
    assert encoded["token_type_ids"] == [0] * (sep + 1) + [1] * (len(encoded["input_ids"]) - sep - 1)
    assert auto.decode(encoded["input_ids"], skip_special_tokens=True).startswith("यह पहला")


@pytest.mark.slow
def test_full_size_vocabulary_same_with_one_and_two_workers(shared_corpus, tmp_path):
    """32,000 entries from every documents/ file (10 MB), in process and on two workers."""
    from transformers import AutoTokenizer

    from tests.vocab.conftest import read_documents

    docs = [d for p in sorted((shared_corpus / "documents").glob("*.txt")) for d in read_documents(p)]
    outputs = []
    for name, beam_args in (("one", []), ("two", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])):
        write_corpus(tmp_path / name / "corpus", docs, num_files=4)
        report = run_vocab_stage(tmp_path / name, ["--vocab_size", "32000"], beam_args)
        assert report["vocab_size"] == 32000
        outputs.append(_files(tmp_path / name / "vocab"))
    assert outputs[0] == outputs[1]
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "one" / "vocab"))) == 32000
