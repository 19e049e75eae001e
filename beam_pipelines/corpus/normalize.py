"""Text normalization for the corpus: the one rule every later stage must repeat.

The rule (``normalize_text``), applied to any piece of text:

1. Every character of Unicode category ``Cc`` (control) is changed:
   the ten that Python's ``str.isspace`` calls whitespace -- ``U+0009``-``U+000D``
   (``\\t \\n \\v \\f \\r``), ``U+001C``-``U+001F`` and ``U+0085`` -- become one space
   ``U+0020`` each; every other ``Cc`` character (``U+0000``-``U+0008``,
   ``U+000E``-``U+001B``, ``U+007F``-``U+0084``, ``U+0086``-``U+009F``) is removed.
2. Then Unicode NFC.

Nothing else changes: no lowercasing, no accent or combining-mark stripping, and format
characters (``Cf``: ZWJ ``U+200D``, ZWNJ ``U+200C``, soft hyphen, BOM, ...) are kept.
As a Hugging Face ``tokenizers`` normalizer this is::

    Sequence([Replace(Regex("[\\x00-\\x08\\x0e-\\x1b\\x7f-\\x84\\x86-\\x9f]"), ""),
              Replace(Regex("[\\t-\\r\\x1c-\\x1f\\x85]"), " "),
              NFC()])

A document (``normalize_document``) is first split into lines at ``\\r\\n``, ``\\r`` and
``\\n``; each line gets the rule above, then its whitespace runs (``str.split()``:
every Unicode whitespace character) become one space, the line is stripped, and empty
lines are dropped. Whitespace collapsing does not change what a whitespace-splitting
pre-tokenizer sees, so the vocabulary stage needs only the rule above.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE_CONTROLS = "".join(chr(c) for c in (*range(0x09, 0x0E), *range(0x1C, 0x20), 0x85))
_OTHER_CONTROLS = "".join(
    chr(c) for c in range(0x00, 0xA0)
    if unicodedata.category(chr(c)) == "Cc" and chr(c) not in _WHITESPACE_CONTROLS
)
_CONTROL_TABLE = {ord(c): " " for c in _WHITESPACE_CONTROLS} | {ord(c): None for c in _OTHER_CONTROLS}
_ANY_CONTROL = re.compile("[" + re.escape(_WHITESPACE_CONTROLS + _OTHER_CONTROLS) + "]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def normalize_text(text: str) -> str:
    """Applies the corpus normalization rule (see the module docstring) to ``text``."""
    if _ANY_CONTROL.search(text):  # str.translate is slow; most text has no control character
        text = text.translate(_CONTROL_TABLE)
    return unicodedata.normalize("NFC", text)


def normalize_document(text: str) -> list[str]:
    """Splits a document into normalized, whitespace-collapsed, non-empty lines.

    Args:
        text: the raw document, lines separated by ``\\n``, ``\\r\\n`` or ``\\r``.

    Returns:
        The document's lines, each normalized by ``normalize_text``, with runs of
        whitespace collapsed to one space and no leading or trailing whitespace.
    """
    lines = []
    for raw in _LINE_BREAK.split(text):
        line = " ".join(normalize_text(raw).split())
        if line:
            lines.append(line)
    return lines
