"""Builds the sample OSCAR 23.01 corpus bundled in ``beam_pipelines/sample_data/``.

The sample is made from permissively licensed files of the shared Hindi corpus
(``../shared/corpus/hi``, see ``beam_pipelines/sample_data/ATTRIBUTION.md``) and a
few real non-Hindi OSCAR records, written in the OSCAR 23.01 layout: JSON lines
compressed with Zstandard, each record ``{content, warc_headers, metadata}``.
The metadata values are synthetic (drawn from a fixed seed) but follow the real
layout. Documents of known kinds are planted so that every corpus filter has
work; their counts go to ``manifest.json`` and ``README.md``.

The output is deterministic: the same shared corpus gives byte-identical files.

Usage::

    python scripts/make_sample_corpus.py                       # writes beam_pipelines/sample_data/
    python scripts/make_sample_corpus.py --output_dir /tmp/s   # somewhere else
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "corpus" / "hi"
DEFAULT_OUTPUT = REPO_ROOT / "beam_pipelines" / "sample_data"

SEED = 20230101
ZSTD_LEVEL = 19
NUM_PARTS = 2
FILE_PATTERN = "hi_meta_part_{}.jsonl.zst"

# Planted kinds and how many of each (the clean "hindi" kind takes everything else).
NUM_NON_HINDI = 12
NUM_LOW_PROB = 8
NUM_TINY = 16
NUM_NOISY = 6
NUM_HARMFUL = 10
NUM_LATIN_HEAVY = 10
NUM_SHORT_SENTENCES = 20
NUM_HEADER_FOOTER = 20
NUM_DUP_GROUPS = 24  # clean documents that get copies
NUM_DUP_TWICE = 6  # of those, how many get a second copy

# Bounds the clean Hindi documents are built to satisfy (the README states them).
CLEAN_MIN_CHARS = 300
CLEAN_MIN_LINES = 5
CLEAN_MIN_DEVANAGARI = 0.85

# Sources: (relative path, kind of file, licence). Only permissive licences.
SOURCES = {
    "gita": ("documents/bhagavad_gita_hindi_translations_hi.txt", "documents", "Unlicense"),
    "devdas": ("documents/devdas_novel_hi.txt", "documents", "MIT (package metadata)"),
    "stories": ("documents/hindi_discourse_stories_hi.txt", "documents", "MIT"),
    "tico19": ("sentences/tico19_test_hi.txt", "sentences", "CC0-1.0"),
    "vardial": ("sentences/vardial2018_ili_hindi_hi.txt", "sentences", "Apache-2.0"),
    "bhaav_reviews": ("sentences/hindi_nli_data_bhaav_productreviews_hi.txt", "sentences", "MIT"),
    "oscar_non_hindi": ("oscar/oscar2201_format_multilingual_sample_NOT_HINDI.jsonl", "oscar", "Apache-2.0"),
}
# Of the BHAAV/product-review file: the first lines are BHAAV story sentences, the last
# ones product reviews; these slices keep the sample at a few MB.
BHAAV_HEAD = 2000
REVIEWS_TAIL = 3000

DOMAINS = ("samachar.example.com", "kahani.example.org", "blog.example.net", "gyan.example.in",
           "review.example.com", "swasthya.example.org", "dharm.example.net", "shop.example.in")
HEADER_LINES = ("मुख्य पृष्ठ | समाचार | खेल | मनोरंजन | संपर्क करें", "होम » लेख", "लॉग इन करें | रजिस्टर करें",
                "आज का राशिफल", "ताज़ा खबरें")
FOOTER_LINES = ("© 2022 सर्वाधिकार सुरक्षित", "हमारे बारे में | गोपनीयता नीति | संपर्क", "हमें फ़ॉलो करें",
                "यह भी पढ़ें", "शेयर करें")
BOILERPLATE = ("मुख्य पृष्ठ\nहमारे बारे में\nसंपर्क करें", "लॉग इन करें\nपासवर्ड भूल गए?",
               "पृष्ठ नहीं मिला (404)", "कुकी नीति स्वीकार करें", "अगला पृष्ठ »", "सदस्यता लें")


@dataclass
class Doc:
    """One record before it gets its metadata."""

    kind: str
    source: str
    lines: list[str]
    line_langs: list[str] = field(default_factory=list)  # "hi", "en" or "" (no confident id)

    @property
    def content(self) -> str:
        return "\n".join(self.lines)


def is_devanagari(ch: str) -> bool:
    return "\u0900" <= ch <= "\u097f" or "\ua8e0" <= ch <= "\ua8ff"


def devanagari_share(text: str) -> float:
    """Share of Devanagari among the letters (and Devanagari marks) of ``text``."""
    letters = [c for c in text if c.isalpha() or is_devanagari(c)]
    if not letters:
        return 0.0
    return sum(1 for c in letters if is_devanagari(c)) / len(letters)


def line_lang(line: str) -> str:
    """The language a line identifier would give confidently: "hi", "en" or ""."""
    letters = [c for c in line if c.isalpha() or is_devanagari(c)]
    if len(letters) < 4:
        return ""
    share = devanagari_share(line)
    if share >= 0.6:
        return "hi"
    if share <= 0.1 and len(line.split()) >= 3:
        return "en"
    return ""


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [unicodedata.normalize("NFC", line.strip()) for line in text.split("\n")]


def read_documents(path: Path) -> list[list[str]]:
    docs, current = [], []
    for line in read_lines(path):
        if line:
            current.append(line)
        elif current:
            docs.append(current)
            current = []
    if current:
        docs.append(current)
    return docs


def chunk_lines(lines: list[str], rng: random.Random, *, lo: int, hi: int) -> list[list[str]]:
    """Cuts a long document into web-page-sized pieces of about lo..hi characters, at line breaks."""
    out, current, size, target = [], [], 0, rng.randint(lo, hi)
    for line in lines:
        current.append(line)
        size += len(line) + 1
        if size >= target:
            out.append(current)
            current, size, target = [], 0, rng.randint(lo, hi)
    if current:
        if out and (size < lo or len(current) < CLEAN_MIN_LINES):
            out[-1].extend(current)
        else:
            out.append(current)
    return out


def group_sentences(sentences: list[str], rng: random.Random, *, lo: int, hi: int) -> list[list[str]]:
    """Groups consecutive sentences into documents of lo..hi sentences."""
    out, i = [], 0
    while i < len(sentences):
        n = rng.randint(lo, hi)
        out.append(sentences[i:i + n])
        i += n
    if len(out) > 1 and len(out[-1]) < lo:
        out[-2].extend(out.pop())
    return out


def is_clean(lines: list[str]) -> bool:
    text = "\n".join(lines)
    return (len(lines) >= CLEAN_MIN_LINES and len(text) >= CLEAN_MIN_CHARS
            and devanagari_share(text) >= CLEAN_MIN_DEVANAGARI)


def hindi_docs(shared: Path, rng: random.Random) -> tuple[list[Doc], list[str]]:
    """Clean Hindi documents from every source, and spare sentences for the planted kinds."""
    docs: list[Doc] = []
    for name in ("gita", "devdas", "stories"):
        for doc in read_documents(shared / SOURCES[name][0]):
            for piece in chunk_lines(doc, rng, lo=1500, hi=9000):
                docs.append(Doc("hindi", name, piece))
    sentences = {name: [s for s in read_lines(shared / SOURCES[name][0]) if s]
                 for name in ("tico19", "vardial", "bhaav_reviews")}
    bhaav = sentences.pop("bhaav_reviews")
    sentences["bhaav_reviews"] = bhaav[:BHAAV_HEAD] + bhaav[-REVIEWS_TAIL:]
    # Tweets and blog lines with URLs or @handles stay out of the clean documents.
    sentences["vardial"] = [s for s in sentences["vardial"] if devanagari_share(s) >= 0.9]
    spare: list[str] = []
    for name, sents in sentences.items():
        spare.extend(sents[-150:])
        for group in group_sentences(sents[:-150], rng, lo=5, hi=30):
            docs.append(Doc("hindi", name, group))
    docs = [d for d in docs if is_clean(d.lines)]
    return docs, spare


def non_hindi_records(shared: Path) -> list[dict]:
    """Real OSCAR 22.01 records (no Hindi), the smaller ones, one language after another."""
    records = [json.loads(line) for line in (shared / SOURCES["oscar_non_hindi"][0]).read_text("utf-8").splitlines()
               if line.strip()]
    small = [r for r in records if len(r["content"]) <= 16000]
    by_lang: dict[str, list[dict]] = {}
    for r in small:
        by_lang.setdefault(r["metadata"]["identification"]["label"], []).append(r)
    chosen: list[dict] = []
    langs = sorted(by_lang)
    while len(chosen) < NUM_NON_HINDI:
        for lang in langs:
            if by_lang[lang] and len(chosen) < NUM_NON_HINDI:
                chosen.append(by_lang[lang].pop(0))
    return chosen


def english_lines(records: list[dict]) -> list[str]:
    lines = []
    for r in records:
        if r["metadata"]["identification"]["label"] == "en":
            lines.extend(s for s in r["content"].split("\n") if len(s) > 60 and line_lang(s) == "en")
    return lines


def planted_docs(spare: list[str], english: list[str], rng: random.Random) -> list[Doc]:
    """The documents each filter should drop or flag (all but duplicates and non-Hindi)."""
    docs: list[Doc] = []
    pool = list(spare)
    rng.shuffle(pool)

    def take(n: int) -> list[str]:
        out = pool[:n]
        del pool[:n]
        return out

    short_pool = [s for s in pool if len(s) <= 60]
    for i in range(NUM_TINY):
        if i % 3 == 2:
            docs.append(Doc("tiny", "synthetic_boilerplate", BOILERPLATE[(i // 3) % len(BOILERPLATE)].split("\n")))
        else:
            docs.append(Doc("tiny", "held_out_sentences", [short_pool.pop(rng.randrange(len(short_pool)))]))
    for _ in range(NUM_LOW_PROB):
        hi_lines, en_lines = take(rng.randint(3, 5)), rng.sample(english, rng.randint(4, 6))
        lines = hi_lines + en_lines
        rng.shuffle(lines)
        docs.append(Doc("low_prob", "held_out_sentences+oscar_non_hindi", lines))
    for _ in range(NUM_NOISY):
        lines = [take(1)[0]]
        for _ in range(rng.randint(8, 14)):
            nums = [str(rng.randint(0, 99999)) for _ in range(rng.randint(4, 9))]
            lines.append(rng.choice([" | ", " - ", "  ", " / "]).join(nums))
        docs.append(Doc("noisy", "held_out_sentences+synthetic_numbers", lines))
    for _ in range(NUM_LATIN_HEAVY):
        docs.append(Doc("latin_heavy", "held_out_sentences+synthetic_latin", latin_heavy_lines(take(2), rng)))
    for _ in range(NUM_HARMFUL):
        docs.append(Doc("harmful", "held_out_sentences", take(rng.randint(5, 9))))
    return docs


def latin_heavy_lines(hindi: list[str], rng: random.Random) -> list[str]:
    """A product listing or scoreboard page: Latin names, numbers, URLs, a little Hindi."""
    lines = []
    for _ in range(rng.randint(8, 12)):
        n = rng.randint(100, 999)
        lines.append(rng.choice([
            f"Model XR-{n} Pro 5G (8GB RAM, 128GB Storage) - Rs {rng.randint(8, 60)},{n} - Free Delivery",
            f"SKU: PRD{n}{rng.randint(10, 99)} | Brand: Example Electronics | Warranty: 1 Year Manufacturer",
            f"https://shop.example.in/product/{n}-smart-led-tv-{rng.randint(32, 65)}-inch?ref=home&utm_source=feed",
            f"IND {rng.randint(150, 350)}/{rng.randint(2, 9)} (50 ov) vs AUS {rng.randint(150, 350)}/"
            f"{rng.randint(2, 9)} (49.{rng.randint(1, 5)} ov) - Match Centre Live Score Updates",
            f"Tags: smartphone, best mobile under {n}00, offers, deals, online shopping India, latest price list",
        ]))
    for h in hindi:
        lines.insert(rng.randrange(len(lines) + 1), h)
    return lines


def header_footer(doc: Doc, rng: random.Random) -> Doc:
    lines = (rng.sample(HEADER_LINES, rng.randint(2, 3)) + doc.lines + rng.sample(FOOTER_LINES, rng.randint(2, 3)))
    return Doc("header_footer", doc.source, lines)


def prob(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), 7)


def fake_tlsh(content: str) -> str:
    """A stand-in for TLSH (256 buckets, 3-byte checksum: 'T1' + 138 hex digits), stable per content."""
    h = hashlib.shake_256(content.encode("utf-8")).hexdigest(69).upper()
    return "tlsh:T1" + h


def warc_headers(doc: Doc, rng: random.Random, *, index: int) -> dict[str, str]:
    body = doc.content.encode("utf-8")
    digest = base64.b32encode(hashlib.sha1(body).digest()).decode("ascii")
    domain = DOMAINS[rng.randrange(len(DOMAINS))]
    day, hour, minute, second = rng.randint(24, 30), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    lang = "hin" if devanagari_share(doc.content) >= 0.8 else "hin,eng"
    return {
        "warc-type": "conversion",
        # OSCAR keeps the length before its own line filtering, so it is often larger.
        "content-length": str(len(body) + rng.choice([0, 0, rng.randint(20, 3000)])),
        "warc-record-id": f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
        "warc-date": f"2022-11-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z",
        "warc-target-uri": f"https://{domain}/{2017 + index % 6}/{rng.randint(1, 12):02d}/lekh-{index:05d}.html",
        "warc-block-digest": f"sha1:{digest}",
        "content-type": "text/plain",
        "warc-identified-content-language": lang,
        "warc-refers-to": f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
    }


def hindi_metadata(doc: Doc, rng: random.Random) -> dict:
    """23.01 metadata for a synthetic record: line and document identification, warnings, scores."""
    sentence_ids, weighted, total = [], 0.0, 0
    for line in doc.lines:
        lang = line_lang(line)
        if lang == "hi":
            entry = {"label": "hi", "prob": prob(rng, 0.88, 1.0)}
        elif lang == "en":
            entry = {"label": "en", "prob": prob(rng, 0.85, 1.0)}
        else:
            entry = None
        sentence_ids.append(entry)
        if entry is not None and entry["label"] == "hi":
            weighted += entry["prob"] * len(line.encode("utf-8"))
        total += len(line.encode("utf-8"))
    if doc.kind == "low_prob":
        doc_prob = prob(rng, 0.45, 0.7)
    elif doc.kind in ("latin_heavy", "noisy"):
        doc_prob = prob(rng, 0.8, 0.95)
    else:
        doc_prob = round(min(1.0, max(0.9, weighted / total if total else 0.9)), 7)
    harmful = prob(rng, 5.0, 25.0) if doc.kind == "harmful" else round(rng.lognormvariate(6.6, 0.7) + 60.0, 4)
    warnings = {"tiny": ["tiny"], "noisy": ["noisy"], "short_sentences": ["short_sentences"],
                "header_footer": ["header", "footer"]}.get(doc.kind)
    categories = ["adult"] if doc.kind == "harmful" and rng.random() < 0.4 else None
    return {
        "identification": {"label": "hi", "prob": doc_prob},
        "harmful_pp": harmful,
        "tlsh": fake_tlsh(doc.content),
        "quality_warnings": warnings,
        "categories": categories,
        "sentence_identifications": sentence_ids,
    }


def convert_2201(record: dict, rng: random.Random) -> dict:
    """A real OSCAR 22.01 record in the 23.01 layout (annotation -> quality_warnings, new scores)."""
    meta = record["metadata"]
    return {
        "content": record["content"],
        "warc_headers": record["warc_headers"],
        "metadata": {
            "identification": meta["identification"],
            "harmful_pp": round(rng.lognormvariate(6.6, 0.7) + 60.0, 4),
            "tlsh": fake_tlsh(record["content"]),
            "quality_warnings": meta["annotation"],
            "categories": None,
            "sentence_identifications": meta["sentence_identifications"],
        },
    }


def build_records(shared: Path, seed: int = SEED) -> tuple[list[list[dict]], dict]:
    """Builds the records of every part and the manifest of what was planted."""
    rng = random.Random(seed)
    clean, spare = hindi_docs(shared, rng)
    raw_non_hindi = non_hindi_records(shared)
    planted = planted_docs(spare, english_lines(json.loads(line) for line in
                           (shared / SOURCES["oscar_non_hindi"][0]).read_text("utf-8").splitlines()), rng)
    rng.shuffle(clean)
    # Short-sentence documents: sentences cut at their first clause (kept only if still clean).
    short: list[Doc] = []
    rest: list[Doc] = []
    for doc in clean:
        if len(short) < NUM_SHORT_SENTENCES:
            lines = list(dict.fromkeys(_first_clause(s) for s in doc.lines))
            if is_clean(lines):
                short.append(Doc("short_sentences", doc.source, lines))
                continue
        rest.append(doc)
    hf = [header_footer(d, rng) for d in rest[:NUM_HEADER_FOOTER]]
    docs = short + hf + rest[NUM_HEADER_FOOTER:] + planted

    items: list[tuple[str, dict]] = []
    for i, doc in enumerate(docs):
        items.append((doc.kind, {"content": doc.content, "warc_headers": warc_headers(doc, rng, index=i),
                                 "metadata": hindi_metadata(doc, rng)}))
    items += [("non_hindi", convert_2201(r, rng)) for r in raw_non_hindi]

    order = list(range(len(items)))
    rng.shuffle(order)
    parts: list[list[tuple[str, dict]]] = [[] for _ in range(NUM_PARTS)]
    for rank, idx in enumerate(order):
        parts[rank * NUM_PARTS // len(order)].append(items[idx])

    # Exact duplicates of clean documents: same content and metadata, new WARC headers; most
    # copies go to the other part, some to the same one.
    originals = [(p, rec) for p, part in enumerate(parts) for kind, rec in part if kind == "hindi"]
    groups = rng.sample(originals, NUM_DUP_GROUPS)
    dup_ids: list[str] = []
    for g, (p, rec) in enumerate(groups):
        for c in range(2 if g < NUM_DUP_TWICE else 1):
            target = p if (g + c) % 3 == 2 else (p + 1) % NUM_PARTS
            doc = Doc("duplicate", "copy", rec["content"].split("\n"))
            copy = {"content": rec["content"], "warc_headers": warc_headers(doc, rng, index=len(items) + len(dup_ids)),
                    "metadata": rec["metadata"]}
            parts[target].insert(rng.randrange(len(parts[target]) + 1), ("duplicate", copy))
            dup_ids.append(copy["warc_headers"]["warc-record-id"])

    sources = Counter(doc.source for doc in docs)
    sources["oscar_non_hindi"] += len(raw_non_hindi)
    manifest = make_manifest(parts, seed)
    manifest["sources_of_unique_records"] = dict(sorted(sources.items()))
    return [[rec for _, rec in part] for part in parts], manifest


def _first_clause(sentence: str) -> str:
    for sep in (",", "।", " और ", " कि "):
        head = sentence.split(sep)[0].strip()
        if 8 <= len(head) < len(sentence):
            return head
    return sentence[:40].rsplit(" ", 1)[0]


def check_kinds(parts: list[list[tuple[str, dict]]]) -> None:
    """Asserts that every record has the properties its kind promises (README.md states them)."""
    for part in parts:
        for kind, rec in part:
            lines, meta = rec["content"].split("\n"), rec["metadata"]
            rid = rec["warc_headers"]["warc-record-id"]
            if kind == "non_hindi":
                ok = meta["identification"]["label"] != "hi"
            elif kind == "tiny":
                ok = len(rec["content"]) < 100 and len(lines) <= 3 and meta["quality_warnings"] == ["tiny"]
            elif kind == "low_prob":
                ok = meta["identification"]["prob"] < 0.75 and meta["quality_warnings"] is None
            elif kind == "latin_heavy":
                ok = (devanagari_share(rec["content"]) < 0.5 and len(lines) >= CLEAN_MIN_LINES
                      and len(rec["content"]) >= CLEAN_MIN_CHARS and meta["identification"]["prob"] >= 0.8
                      and meta["quality_warnings"] is None and meta["harmful_pp"] > 60)
            elif kind == "noisy":
                ok = meta["quality_warnings"] == ["noisy"] and len(rec["content"]) >= CLEAN_MIN_CHARS
            else:  # hindi, duplicate, harmful, short_sentences, header_footer
                ok = (is_clean(lines) and meta["identification"]["label"] == "hi"
                      and meta["identification"]["prob"] >= 0.9
                      and (meta["harmful_pp"] <= 25 if kind == "harmful" else meta["harmful_pp"] > 60)
                      and (meta["quality_warnings"] is None or kind in ("short_sentences", "header_footer")))
            if not ok:
                raise AssertionError(f"record {rid} does not have the properties of kind {kind!r}")


def make_manifest(parts: list[list[tuple[str, dict]]], seed: int) -> dict:
    check_kinds(parts)
    kinds = Counter(kind for part in parts for kind, _ in part)
    contents = Counter(rec["content"] for part in parts for _, rec in part)
    extra_copies = sum(n - 1 for n in contents.values())
    if extra_copies != kinds["duplicate"]:
        raise AssertionError(f"{extra_copies} duplicate copies found, {kinds['duplicate']} planted")
    ids = {k: sorted(rec["warc_headers"]["warc-record-id"] for part in parts for kind, rec in part if kind == k)
           for k in sorted(kinds) if k != "hindi"}
    return {
        "seed": seed,
        "zstd_level": ZSTD_LEVEL,
        "files": {FILE_PATTERN.format(p + 1): {
            "records": len(part),
            "uncompressed_bytes": sum(len(_dumps(rec)) + 1 for _, rec in part),
            "content_chars": sum(len(rec["content"]) for _, rec in part),
        } for p, part in enumerate(parts)},
        "records": sum(kinds.values()),
        "kinds": dict(sorted(kinds.items())),
        "duplicate_groups": sum(1 for n in contents.values() if n > 1),
        "duplicate_groups_across_parts": _cross_part_groups(parts),
        "quality_warnings": dict(sorted(Counter(w for part in parts for _, rec in part
                                               for w in rec["metadata"]["quality_warnings"] or []).items())),
        "identification_labels": dict(sorted(Counter(rec["metadata"]["identification"]["label"]
                                                     for part in parts for _, rec in part).items())),
        "record_ids": ids,
        # Every member of each duplicate group (the original and its copies); which one a
        # deduplicating stage keeps is its own choice, the number it drops is not.
        "duplicate_group_ids": _duplicate_groups(parts),
    }


def _duplicate_groups(parts: list[list[tuple[str, dict]]]) -> list[list[str]]:
    members: dict[str, list[str]] = {}
    for part in parts:
        for _, rec in part:
            members.setdefault(rec["content"], []).append(rec["warc_headers"]["warc-record-id"])
    return sorted(sorted(ids) for ids in members.values() if len(ids) > 1)


def _cross_part_groups(parts: list[list[tuple[str, dict]]]) -> int:
    where: dict[str, set[int]] = {}
    for p, part in enumerate(parts):
        for _, rec in part:
            where.setdefault(rec["content"], set()).add(p)
    return sum(1 for s in where.values() if len(s) > 1)


def _dumps(rec: dict) -> bytes:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_sample(shared: Path, output_dir: Path, seed: int = SEED) -> dict:
    """Writes the parts and ``manifest.json`` into ``output_dir``; returns the manifest."""
    parts, manifest = build_records(shared, seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
    for p, records in enumerate(parts):
        data = b"".join(_dumps(rec) + b"\n" for rec in records)
        (output_dir / FILE_PATTERN.format(p + 1)).write_bytes(compressor.compress(data))
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    write_readme(manifest, output_dir)
    return manifest


KIND_DESCRIPTIONS = {
    "hindi": ("clean Hindi documents: label `hi`, prob >= 0.9, no quality warning, harmful_pp > 60, "
              f">= {CLEAN_MIN_LINES} lines, >= {CLEAN_MIN_CHARS} characters, Devanagari share of letters "
              f">= {CLEAN_MIN_DEVANAGARI}", "kept"),
    "short_sentences": ("clean Hindi whose sentences were cut at their first clause; warnings `[short_sentences]`",
                        "kept unless `short_sentences` is filtered"),
    "header_footer": ("clean Hindi with site navigation lines added above and below; warnings `[header, footer]`",
                      "kept unless `header`/`footer` are filtered"),
    "duplicate": ("exact copies of clean Hindi documents (same content and metadata, new WARC headers)",
                  "duplicate"),
    "non_hindi": ("real OSCAR 22.01 records (Wikipedia pages in de, en, es, fr, ru, zh), converted to 23.01",
                  "language"),
    "low_prob": ("Hindi lines mixed with English lines; label `hi` with prob 0.45-0.70", "language (probability)"),
    "tiny": ("one short Hindi sentence or a few menu lines (< 100 characters, <= 3 lines); warnings `[tiny]`",
             "quality warning (also below any minimum length)"),
    "noisy": ("a Hindi sentence followed by lines of numbers; warnings `[noisy]`", "quality warning"),
    "harmful": ("clean Hindi text with `harmful_pp` between 5 and 25 (some with categories `[adult]`)",
                "harmful-content score"),
    "latin_heavy": ("product listings, scores and URLs in Latin script with two Hindi sentences; label `hi`, "
                    "prob >= 0.8, no warning; Devanagari share of letters < 0.5", "Devanagari share"),
}


def write_readme(manifest: dict, output_dir: Path) -> None:
    """Writes README.md: what the sample holds and the manifest of planted documents."""
    rows = "\n".join(f"| `{k}` | {manifest['kinds'].get(k, 0)} | {d} | {why} |"
                      for k, (d, why) in KIND_DESCRIPTIONS.items())
    files = "\n".join(f"| `{name}` | {f['records']} | {f['uncompressed_bytes']:,} | {f['content_chars']:,} |"
                       for name, f in manifest["files"].items())
    warnings = ", ".join(f"`{k}` {v}" for k, v in manifest["quality_warnings"].items())
    labels = ", ".join(f"`{k}` {v}" for k, v in manifest["identification_labels"].items())
    sources = ", ".join(f"`{k}` {v}" for k, v in manifest["sources_of_unique_records"].items())
    text = f"""# Sample OSCAR 23.01 corpus (Hindi)

The default `--input` of `python -m beam_pipelines.build`: {manifest['records']} documents in the
OSCAR 23.01 layout (JSON lines compressed with Zstandard; each line `{{content, warc_headers,
metadata}}` with `metadata` = `identification`, `harmful_pp`, `tlsh`, `quality_warnings`,
`categories`, `sentence_identifications`). The text is real (see `ATTRIBUTION.md`); the metadata
values are synthetic, drawn from a fixed seed, in the real layout.

Generated by `python scripts/make_sample_corpus.py` (seed {manifest['seed']}, zstd level
{manifest['zstd_level']}) from `../shared/corpus/hi`; a re-run gives byte-identical files.
Do not edit these files by hand. `manifest.json` holds the same counts as below, plus the
`warc-record-id` of every planted record and the members of every duplicate group.

| file | records | bytes (uncompressed JSONL) | characters of `content` |
|---|---:|---:|---:|
{files}

## Manifest: documents per kind

Each record belongs to exactly one kind. The last column names the filter meant to drop it;
where a record would fail several filters, the one listed is the reason it was planted for.

| kind | records | what it is | dropped by |
|---|---:|---|---|
{rows}

- Duplicate groups: {manifest['duplicate_groups']} (each a clean `hindi` record plus 1 or 2 copies;
  {NUM_DUP_TWICE} groups have 2 copies), {manifest['duplicate_groups_across_parts']} of them span both files.
  Exact deduplication drops {manifest['kinds'].get('duplicate', 0)} records, whichever copy it keeps.
- Records whose `quality_warnings` contain each value: {warnings}
  (the `non_hindi` records keep their real OSCAR warnings).
- `identification.label`: {labels}.
- Source of each record other than the duplicate copies (names as in `ATTRIBUTION.md`): {sources}.
- Every record: `sentence_identifications` has one entry per `\\n`-separated line of `content`
  (`null` where a line has fewer than 4 letters or mixes scripts).
"""
    (output_dir / "README.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared_corpus", type=Path, default=DEFAULT_SHARED, help="the shared Hindi corpus")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if not args.shared_corpus.is_dir():
        parser.error(f"--shared_corpus: no directory {args.shared_corpus}")
    manifest = write_sample(args.shared_corpus, args.output_dir, args.seed)
    print(json.dumps({k: manifest[k] for k in ("records", "kinds", "files")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
