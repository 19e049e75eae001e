"""On real Hindi text: the converted folder's ``AutoTokenizer`` gives the training data's ids.

The vocabulary files are made by the vocabulary stage's own writer
(``beam_pipelines.vocab.tokenizer_spec``) from a WordPiece vocabulary learned on shared Hindi
sentences; the converted tokenizer must reproduce ``tokenizer.json`` on every line of other
Hindi sentences, including lines with zero-width joiners and decomposed (NFD) text.
"""

from __future__ import annotations

import unicodedata

import pytest

from conversion import convert
from tests.conversion import helpers
from trainer.config import BertConfig

pytestmark = pytest.mark.integration


def _learn_vocab(lines, size: int) -> list[str]:
    from tokenizers import BertWordPieceTokenizer

    learner = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=False)
    learner.train_from_iterator(lines, vocab_size=size, min_frequency=2, special_tokens=helpers.SPECIALS)
    by_id = sorted(learner.get_vocab().items(), key=lambda item: item[1])
    learned = [t for t, _ in by_id if t not in helpers.SPECIALS and t.strip()]
    return helpers.SPECIALS + learned


def test_converted_tokenizer_matches_tokenizer_json_on_hindi(shared_corpus, tmp_path):
    spec = pytest.importorskip("beam_pipelines.vocab.tokenizer_spec")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    train = (shared_corpus / "sentences" / "tico19_test_hi.txt").read_text(encoding="utf-8").splitlines()
    test = (
        (shared_corpus / "sentences" / "wmt14_newstest2014_hi.txt").read_text(encoding="utf-8").splitlines()
    )
    tokens = _learn_vocab(train, 3000)
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    for name, data in spec.tokenizer_files(tokens).items():
        (vocab_dir / name).write_bytes(data)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    helpers.write_export(str(tmp_path / "model"), config, helpers.random_weights(config))
    out = tmp_path / "hf"
    argv = ["--model_dir", str(tmp_path / "model"), "--vocab_dir", str(vocab_dir), "--output_dir", str(out)]
    assert convert.main(argv) == 0
    # The vocabulary stage's tokenizer.json is complete: copied byte for byte.
    assert (out / "tokenizer.json").read_bytes() == (vocab_dir / "tokenizer.json").read_bytes()

    reference = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    lines = test[:800] + [
        "क्ष\u200dत्रिय और हि\u200cन्दी",  # ZWJ / ZWNJ
        unicodedata.normalize("NFD", "क़लम और ज़मीन"),  # nukta decomposed
        "भारत की राजधानी [MASK] है।",
    ]
    differing = [line for line in lines if tokenizer(line)["input_ids"] != reference.encode(line).ids]
    assert differing == []
    unk = sum(reference.encode(line).ids.count(1) for line in test[:800])
    assert unk < 0.05 * sum(len(reference.encode(line).ids) for line in test[:800])  # the vocabulary is real
