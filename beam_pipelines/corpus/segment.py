"""Sentence segmentation for Hindi web text (pure Python).

A sentence never crosses a line: each line of a normalized document (OSCAR keeps one
paragraph per line) is split on its own. A sentence ends after:

- ``।`` (danda) or ``॥`` (double danda), always, even without a following space;
- ``?`` or ``!`` (also full-width), when followed by whitespace or the end of the line;
- ``|`` typed as a danda, when followed by whitespace or the end of the line, or when
  it touches a Devanagari character (``नमस्कार|आज``, ``है |आपने``);
- a Latin capital ``I`` standing alone as a word after a Devanagari word, at the end of
  the line or after a word that commonly ends a sentence (``है``, ``थे``, ``गया``...) and
  before a word that does not start with a Latin letter (``हैं I आज``; but ``I am`` is
  English and ``प्रकार I इंटरफेरॉन`` is a Roman numeral);
- a single ``.`` followed by whitespace or the end of the line, unless the word it ends
  is an abbreviation (``डॉ.``, ``श्री.``, ``Dr.``, ``e.g.``, any word with another ``.``
  inside such as ``म.प्र.`` or ``U.S.``), a single Latin letter or a Latin letter's Hindi
  name used as an initial (``ए. आर. रहमान``), a number that starts the sentence (a list item
  ``1.``), or the next word starts with a lowercase Latin letter. A ``.`` inside a word
  (``2.5``, ``www.example.com``) and an ellipsis (``..``, ``...``, ``…``) never end a
  sentence except at the end of the line.

A run of terminators (``?!``, ``।।``) ends one sentence, and closing quotes and brackets
right after a terminator (``।"``, ``?)``, ``.’``) stay with the sentence they close. A
piece without any letter or digit (``।।`` before a verse number) joins the next sentence,
or the previous one at the end of the line.
"""

from __future__ import annotations

import re

_STRONG = frozenset("।॥?!？！")
_CLOSERS = frozenset("\"'”’)]}»›")
_RUN = frozenset("।॥?!？！|.")
_CANDIDATE = re.compile(r"[।॥?!？！|.I]")

# Abbreviations that end with a period (compared without that period).
ABBREVIATIONS = frozenset({
    # Devanagari titles and short forms
    "डॉ", "डा", "श्री", "श्रीमती", "सुश्री", "कु", "प्रो", "पं", "स्व", "मो", "मु", "सं", "ई",
    "पू", "रु", "रू", "लि", "प्रा", "क्र", "नं", "सर्व", "ले", "जि", "वि", "उ", "प्र", "अ", "आ",
    "ज", "कं", "मि", "मिस", "ग्रा", "कि", "मी", "से", "पृ", "ब",
    # Latin
    "Dr", "Mr", "Mrs", "Ms", "Mt", "Prof", "Sr", "Jr", "St", "Smt", "Shri", "Sh", "Km", "Kum",
    "Rs", "No", "Nos", "Vol", "vs", "etc", "approx", "Ltd", "Pvt", "Co", "Inc", "Corp", "Govt",
    "Dept", "Fig", "fig", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct",
    "Nov", "Dec", "Lt", "Col", "Gen", "Capt", "Maj", "Hon", "Sec", "Ch", "Art", "pp", "cf",
})

# Latin letters as Hindi spells them, used as initials (``ए. आर. रहमान``, ``जे. पी.``).
_DEVANAGARI_INITIALS = frozenset({
    "ए", "बी", "सी", "डी", "ई", "एफ", "जी", "एच", "आई", "जे", "के", "एल", "एम", "एन", "ओ", "पी",
    "क्यू", "आर", "एस", "टी", "यू", "वी", "डब्ल्यू", "एक्स", "वाई", "जेड", "ज़ेड",
})
# Words that end most Hindi sentences (auxiliaries and common verb forms): a Latin ``I``
# after one of them is a danda (``बात है I आज``), elsewhere a letter or a Roman numeral
# (``प्रकार I इंटरफेरॉन``).
_FINAL_WORDS = frozenset({
    "है", "हैं", "था", "थी", "थे", "थीं", "हूँ", "हूं", "हो", "गा", "गी", "गे", "चाहिए", "रहा", "रही", "रहे",
    "गया", "गयी", "गई", "गए", "गये", "दिया", "दी", "दिए", "दिये", "किया", "किए", "किये", "सके", "सकता",
    "सकती", "सकते", "जाए", "जाये", "जाएं", "जाएँ", "करें", "करेंगे", "लिया", "लिए", "धन्यवाद", "नमस्कार",
})
_LATIN_INITIAL = re.compile(r"[A-Za-z]")
_NUMBER = re.compile(r"[0-9०-९]+")
_HAS_ALNUM = re.compile(r"[^\W_]")
_OPENERS = "\"'“‘([{«‹"


def _is_devanagari(ch: str) -> bool:
    return "\u0900" <= ch <= "\u097f" or "\ua8e0" <= ch <= "\ua8ff"


def _is_ascii_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _word_before(line: str, start: int, end: int) -> str:
    """The whitespace-delimited word that ends at ``end`` (exclusive), opening quotes removed."""
    i = end
    while i > start and not line[i - 1].isspace():
        i -= 1
    return line[i:end].lstrip(_OPENERS)


def _period_ends_sentence(line: str, sent_start: int, dot: int, after: int) -> bool:
    """Decides whether the single ``.`` at ``dot`` ends a sentence.

    ``after`` is the index just past the period and any closers; the caller has checked
    that it is the end of the line or whitespace.
    """
    word = _word_before(line, sent_start, dot)
    if not word:
        return True
    if word in ABBREVIATIONS or "." in word:
        return False
    if _LATIN_INITIAL.fullmatch(word) or word in _DEVANAGARI_INITIALS:
        return after >= len(line)
    if _NUMBER.fullmatch(word) and not line[sent_start:dot - len(word)].strip():
        return False
    nxt = after
    while nxt < len(line) and line[nxt].isspace():
        nxt += 1
    if nxt < len(line) and "a" <= line[nxt] <= "z":
        return False
    return True


def split_line(line: str) -> list[str]:
    """Splits one line of text into sentences (see the module docstring for the rules).

    Args:
        line: one normalized line (no newline inside).

    Returns:
        The sentences, stripped, none empty; ``[]`` for a blank line. Joining them with
        single spaces gives the line back up to whitespace.
    """
    n = len(line)
    cuts: list[int] = []
    start = 0
    pos = 0
    while True:
        m = _CANDIDATE.search(line, pos)
        if m is None:
            break
        i = m.start()
        ch = line[i]
        if ch == "I":
            pos = i + 1
            if not _is_spaced_i_danda(line, i):
                continue
            end = i + 1
        else:
            j = i + 1
            while j < n and line[j] in _RUN:
                j += 1
            run = line[i:j]
            end = j
            while end < n and line[end] in _CLOSERS:
                end += 1
            pos = end
            at_break = end >= n or line[end].isspace()
            if any(c in _STRONG for c in run):
                if not (at_break or "।" in run or "॥" in run):
                    continue
            elif "|" in run:
                if not (at_break or (i > 0 and _is_devanagari(line[i - 1]))
                        or (end < n and _is_devanagari(line[end]))):
                    continue
            elif run.count(".") == len(run):
                if not at_break:
                    continue
                if len(run) > 1:  # an ellipsis ends a sentence only at the end of the line
                    if end < n:
                        continue
                elif not _period_ends_sentence(line, start, i, end):
                    continue
        if line[start:end].strip():
            cuts.append(end)
        start = end
    return _pieces(line, cuts)


def _pieces(line: str, cuts: list[int]) -> list[str]:
    """Cuts ``line`` at ``cuts``; a piece without letters or digits joins its neighbour."""
    bounds = [0, *cuts, len(line)]
    pieces = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1) if line[bounds[k]:bounds[k + 1]].strip()]
    merged: list[list[int]] = []
    pending_start = None
    for a, b in pieces:
        if pending_start is not None:
            a, pending_start = pending_start, None
        if not _HAS_ALNUM.search(line, a, b):
            if merged:
                merged[-1][1] = b
            else:
                pending_start = a
            continue
        merged.append([a, b])
    if pending_start is not None:
        merged.append([pending_start, len(line)])
    return [line[a:b].strip() for a, b in merged]


def _is_spaced_i_danda(line: str, i: int) -> bool:
    """True for a Latin ``I`` written as a danda (see the module docstring)."""
    n = len(line)
    if i == 0 or not line[i - 1].isspace():
        return False
    if i + 1 < n and not line[i + 1].isspace():
        return False
    k = i - 1
    while k >= 0 and line[k].isspace():
        k -= 1
    if k < 0 or not _is_devanagari(line[k]):
        return False
    previous = _word_before(line, 0, k + 1)
    k = i + 1
    while k < n and line[k].isspace():
        k += 1
    if k >= n:
        return True
    return not _is_ascii_letter(line[k]) and previous in _FINAL_WORDS


def split_sentences(lines: list[str]) -> list[str]:
    """Splits every line of a document into sentences, in order."""
    out: list[str] = []
    for line in lines:
        out.extend(split_line(line))
    return out
