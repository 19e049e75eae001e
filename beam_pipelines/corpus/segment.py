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

Menus are not sentences: a run of at least three consecutive menu items stays together as
one piece (``होम | देश | विदेश | खेल``: a site's navigation bar or footer, a tag list, a
table row such as ``SKU: PRD1 | Brand: X | Warranty: 1 Year``). A menu item is a piece of
one to four words (a word has a letter or a digit) with no comma before a space, no
ergative ``ने`` (``सीता ने``, ``उसने``), and a last word that does not end a clause: not a
sentence-final word above (the imperative ``करें`` of ``संपर्क करें`` aside), not another
common finite verb form (``हुआ``, ``खाया``, ``होता``...), ``नहीं``, ``मत`` or a future form
(``करेगा``, ``होंगे``). Every item of the run but the last ends with a menu separator: a
``|`` standing alone with whitespace (or the line start) before it and whitespace (or the
line end) after it; the last item ends with a lone ``|`` of any spacing or at the line end
without a terminator. The piece keeps the run's last ``|``, if any. Only ``|`` separates
menu items: ``।`` is the danda proper, and a ``|`` typed against a word (``है|``, ``|मोदी``)
is how the danda, not a menu separator, is usually typed. Two items (``लॉग इन करें |
रजिस्टर करें``) are split as before. Breadcrumbs (``होम » देश » खेल``) have no terminator
and are never split.
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
# Words that make a short piece a clause, not a menu item (see ``_is_menu_item``). Last
# words: the sentence-final words above, except the imperative ``करें`` that ends menu items
# (``संपर्क करें``, ``लॉग इन करें``), and more finite verb forms.
_CLAUSE_FINAL_WORDS = (_FINAL_WORDS - {"करें"}) | frozenset({
    "नहीं", "मत", "हुआ", "हुई", "हुए", "हुईं", "गईं", "गयीं", "आया", "आई", "आयी", "आए", "आये", "लगा", "लगी",
    "लगे", "चुका", "चुकी", "चुके", "सका", "सकी", "पाया", "कहा", "बोला", "बोली", "बोले", "देखा", "सुना",
    "पूछा", "लिखा", "पढ़ा", "खाया", "पिया", "लाया", "बनाया", "बताया", "मिला", "मिली", "रखा", "चला",
    "चली", "होता", "होती", "होते", "जाता", "जाती", "जाते", "करता", "करती", "करते", "रहीं",
})
# Future tense (``करेगा``, ``होंगे``, ``जाएगी``, ``करूँगा``, ``आओगे``) as the last word.
_FUTURE = re.compile(r".(?:े|ें|ो|ों|ूँ|ूं|ए|एं|एँ|ओ|ऊँ|ऊं)(?:गा|गी|गे|गीं)$")
# The ergative ``ने`` (``सीता ने``, ``उसने``) anywhere: a transitive clause in the past.
_ERGATIVE = frozenset({"ने", "मैंने", "हमने", "तूने", "तुमने", "आपने", "उसने", "इसने", "उन्होंने",
                       "इन्होंने", "जिसने", "जिन्होंने", "किसने", "किन्होंने"})
MENU_MIN_ITEMS = 3
MENU_MAX_WORDS = 4
_WORD_EDGES = "".join(_CLOSERS) + "\"'“‘([{«‹,;:-–—"
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
    pipe_cuts: dict[int, bool] = {}  # cut made by a lone '|' -> whether it is a menu separator
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
            if line[i:end] == "|":
                pipe_cuts[end] = ((i == 0 or line[i - 1].isspace())
                                  and (end >= n or line[end].isspace()))
        start = end
    return _pieces(line, _join_menus(line, cuts, pipe_cuts))


def _is_menu_item(text: str) -> bool:
    """True for a piece (its final ``|`` removed) that can be a menu item, not a clause."""
    words = [w.strip(_WORD_EDGES) for w in text.split() if _HAS_ALNUM.search(w)]
    if not 1 <= len(words) <= MENU_MAX_WORDS or re.search(r",\s", text):
        return False
    if words[-1] in _CLAUSE_FINAL_WORDS or _FUTURE.search(words[-1]):
        return False
    return not any(w in _ERGATIVE for w in words)


def _join_menus(line: str, cuts: list[int], pipe_cuts: dict[int, bool]) -> list[int]:
    """Drops the cuts inside every run of menu items (see the module docstring)."""
    if sum(pipe_cuts.values()) < MENU_MIN_ITEMS - 1:
        return cuts
    bounds = [0, *cuts, len(line)]
    # For each piece: 2 if it is a menu item that ends with a menu separator (the run goes
    # on), 1 if it can only end a run, 0 if it is no menu item.
    kinds = []
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        closed = k < len(cuts)
        if (closed and b not in pipe_cuts) or not _is_menu_item(line[a:b].strip().removesuffix("|")):
            kinds.append(0)
        else:
            kinds.append(2 if closed and pipe_cuts[b] else 1)
    dropped: set[int] = set()
    k = 0
    while k < len(kinds):
        m = k
        while m < len(kinds) and kinds[m] == 2:
            m += 1
        last = m if m < len(kinds) and kinds[m] == 1 else m - 1
        if last - k + 1 >= MENU_MIN_ITEMS:
            dropped.update(cuts[k:last])
        k = max(m, k + 1)
    return [c for c in cuts if c not in dropped] if dropped else cuts


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
