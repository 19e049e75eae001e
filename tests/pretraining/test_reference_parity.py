"""Instance-level comparison with google-research/bert ``create_pretraining_data.py``.

The reference script is not part of this project; the test runs only where
``BERT_REFERENCE_DIR`` names a directory holding its ``create_pretraining_data.py`` and
``tokenization.py`` (e.g. a google-research/bert checkout).
"""

from __future__ import annotations

import os

import pytest

from benchmarks.pretraining_reference import (
    compare_with_reference,
    prepare_reference,
    reference_log,
    run_reference,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_dir() -> str:
    path = os.environ.get("BERT_REFERENCE_DIR")
    if not path:
        pytest.skip("set BERT_REFERENCE_DIR to a google-research/bert checkout")
    return path


def test_every_reference_instance_is_reproduced(reference_dir, hindi_workspace, shared_corpus, tmp_path):
    """Same tokens, seed and order: all instances equal (compatibility mode: full-vocabulary random pool)."""
    script_dir = prepare_reference(reference_dir, str(tmp_path))
    files = [str(shared_corpus / "documents" / "devdas_novel_hi.txt"),
             str(shared_corpus / "documents" / "bhagavad_gita_hindi_translations_hi.txt")]
    vocab = str(hindi_workspace / "vocab" / "vocab.txt")
    out = str(tmp_path / "reference.tfrecord")
    proc = run_reference(script_dir, input_files=files, vocab_file=vocab, output_file=out, dupe_factor=2)
    proc.wait()
    assert proc.returncode == 0, reference_log(out)[-2000:]
    result = compare_with_reference(script_dir, input_files=files, vocab_file=vocab, reference_output=out,
                                    dupe_factor=2)
    assert result["reference_instances"] == result["ours"] > 1000
    assert result["identical"] == result["ours"], result["first_difference"]
