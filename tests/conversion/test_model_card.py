"""The model card, and the case/accent flags it and tokenizer_config.json take from tokenizer.json."""

from __future__ import annotations

import json

import pytest

from conversion import model_card, vocab_files
from tests.conversion import helpers


def test_card_of_an_import_without_training():
    state = {"step": 0, "examples_seen": 0, "train_metrics": {}, "eval_metrics": {}, "data_metadata": None}
    card = model_card.render(
        config=helpers.TINY.to_dict(), training_state=state, vocab_size=120, model_path="hf/x", language=None
    )
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "The training state records no data metadata." in card
    assert "### Final training metrics (last logged steps)\n\nNone recorded.\n" in card
    assert "### Final evaluation metrics (validation split)\n\nNone recorded.\n" in card
    assert "| step | 0 |" in card and "AutoTokenizer.from_pretrained('hf/x')" in card


@pytest.mark.parametrize(
    ("normalizer", "expected"),
    [
        pytest.param(None, (False, False), id="none"),
        pytest.param({"type": "Sequence", "normalizers": [{"type": "NFC"}]}, (False, False), id="nfc"),
        pytest.param(
            {"type": "BertNormalizer", "clean_text": True, "lowercase": True, "strip_accents": None},
            (True, True),
            id="bert-uncased",
        ),
        pytest.param(
            {"type": "BertNormalizer", "lowercase": False, "strip_accents": None},
            (False, False),
            id="bert-cased",
        ),
        pytest.param(
            {
                "type": "Sequence",
                "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}],
            },
            (True, True),
            id="sequence-uncased",
        ),
    ],
)
def test_case_and_accents_follow_the_normalizer(normalizer, expected):
    vocab = vocab_files.Vocabulary(
        directory="v",
        tokens=tuple(helpers.SPECIALS),
        tokenizer_json=json.dumps({"normalizer": normalizer, "model": {"type": "WordPiece", "vocab": {}}}),
        special_tokens=dict(vocab_files.SPECIAL_TOKENS),
    )
    flags = vocab_files.case_and_accents(vocab)
    assert (flags["do_lower_case"], flags["strip_accents"]) == expected
    card = model_card.render(config=helpers.TINY.to_dict(), training_state={}, vocab_size=5, **flags)
    assert ("lowercased" in card) == expected[0] and ("accents stripped" in card) == expected[1]
