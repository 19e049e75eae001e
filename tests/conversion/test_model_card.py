"""The model card for an import-only export: no data, no metrics."""

from __future__ import annotations

from conversion import model_card
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
