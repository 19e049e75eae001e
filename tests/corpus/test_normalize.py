"""Normalization: NFC plus control characters, nothing lowercased, no mark stripped."""

from __future__ import annotations

import unicodedata

import pytest

from beam_pipelines.corpus.normalize import normalize_document, normalize_text

CASES = [
    # name, input, expected
    ("matras_virama_anusvara_candrabindu_kept", "हिन्दी भाषा में कुछ शब्द हँसी", "हिन्दी भाषा में कुछ शब्द हँसी"),
    ("nukta_precomposed_is_decomposed_by_nfc", "\u0958", "\u0915\u093c"),  # U+0958 is a composition exclusion
    ("nukta_decomposed_stays", "\u0915\u093c\u093e", "\u0915\u093c\u093e"),
    ("zwj_zwnj_kept", "क्\u200dष क्\u200cष", "क्\u200dष क्\u200cष"),
    ("visarga_avagraha_kept", "दुःख सोऽहम्", "दुःख सोऽहम्"),
    ("latin_case_kept", "Good Governance IPL", "Good Governance IPL"),
    ("latin_nfc", "Cafe\u0301", "Café"),
    ("tab_becomes_space", "एक\tदो", "एक दो"),
    ("newline_becomes_space", "एक\nदो", "एक दो"),
    ("nul_and_bell_removed", "ए\x00क\x07", "एक"),
    ("c1_controls", "a\x85b\x9fc\x80d", "a bcd"),
    ("delete_removed", "ab\x7fc", "abc"),
    ("removal_then_nfc_composes", "e\x01\u0301", "é"),
    ("soft_hyphen_and_bom_kept", "\ufeffक\u00adख", "\ufeffक\u00adख"),
    ("danda_kept", "है। ॥", "है। ॥"),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_normalize_text(name, text, expected):
    assert normalize_text(text) == expected


def test_rule_matches_docstring_for_every_control_character():
    for code in range(0x110000):
        ch = chr(code)
        if unicodedata.category(ch) != "Cc":
            continue
        expected = " " if ch.isspace() else ""
        assert normalize_text(ch) == expected, hex(code)


def test_normalize_document_lines_and_whitespace():
    text = "  पहली  पंक्ति\u00a0है।\r\n\r\nदूसरी\tपंक्ति\rतीसरी\x0b पंक्ति \n\n\x00\n"
    assert normalize_document(text) == ["पहली पंक्ति है।", "दूसरी पंक्ति", "तीसरी पंक्ति"]


def test_document_output_is_nfc_and_control_free(shared_corpus):
    text = (shared_corpus / "oscar" / "oscar2019_unshuffled_original_hi_hi_part_1.sample.txt").read_text("utf-8")
    lines = normalize_document(text)
    assert len(lines) == 16
    for line in lines:
        assert unicodedata.is_normalized("NFC", line)
        assert not any(unicodedata.category(c) == "Cc" for c in line)
    # Nothing else changed: the sample is already NFC with single spaces.
    assert lines == [" ".join(x.split()) for x in text.splitlines() if x.strip()]


def test_tokenizers_normalizer_stated_in_docstring_agrees():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex
    from tokenizers.normalizers import NFC, Replace, Sequence

    norm = Sequence([Replace(Regex("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]"), ""),
                     Replace(Regex("[\t-\r\x1c-\x1f\x85]"), " "), NFC()])
    assert tokenizers is not None
    for _, text, _ in CASES:
        assert norm.normalize_str(text) == normalize_text(text), text
