"""Readers: format detection, each OSCAR format, bad records and files, byte ranges."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest
import zstandard

from beam_pipelines.corpus import readers as R

MAX = 1 << 20


def records_of(data: bytes, *, fmt: str, compression: str | None = None, max_record_bytes: int = MAX):
    stream = R.open_decompressed(io.BytesIO(data), compression)
    lines = R.iter_lines(stream, max_line_bytes=max_record_bytes + 1)
    if fmt in R.JSON_FORMATS:
        return list(R.read_json_records(lines, source="f", max_record_bytes=max_record_bytes))
    return list(R.read_text_records(lines, source="f", max_record_bytes=max_record_bytes))


def oscar_line(content, **meta) -> bytes:
    return json.dumps({"content": content, "warc_headers": {}, "metadata": meta}, ensure_ascii=False).encode()


DETECT_CASES = [
    ("hi_meta_part_1.jsonl.zst", set(), (R.OSCAR2301, None)),
    ("gs://b/x/hi_meta_part_1.jsonl.zstd", set(), (R.OSCAR2301, None)),
    ("hi_meta_part_1.jsonl.gz", set(), (R.OSCAR2201, None)),
    ("en_meta_134.jsonl.gz", set(), (R.OSCAR2201, None)),
    ("data.jsonl", set(), (R.OSCAR2201, None)),
    ("hi_part_1.txt.gz", set(), (R.OSCAR2019, None)),
    ("hi.txt", set(), (R.OSCAR2019, None)),
    ("d/hi_part_3.txt.gz", {"d/hi_meta_part_3.jsonl.gz"}, (R.OSCAR2109, "d/hi_meta_part_3.jsonl.gz")),
    ("d/hi.txt.gz", {"d/hi_meta.jsonl.gz"}, (R.OSCAR2109, "d/hi_meta.jsonl.gz")),
    ("d/hi_part_3.txt", {"d/hi_meta_part_3.jsonl"}, (R.OSCAR2109, "d/hi_meta_part_3.jsonl")),
]


@pytest.mark.parametrize("path,existing,expected", DETECT_CASES, ids=[c[0] for c in DETECT_CASES])
def test_detect_format(path, existing, expected):
    assert R.detect_format(path, existing.__contains__) == expected


def test_detect_format_unknown_names_the_file():
    with pytest.raises(ValueError, match=r"data/hi\.parquet.*--input_format"):
        R.detect_format("data/hi.parquet", lambda p: False)


def test_meta_and_text_companions():
    assert R.text_companion_of_meta("d/hi_meta_part_2.jsonl.gz") == ["d/hi_part_2.txt.gz", "d/hi_part_2.txt"]
    assert R.text_companion_of_meta("d/hi_meta.jsonl.gz") == ["d/hi.txt.gz", "d/hi.txt"]
    assert R.text_companion_of_meta("d/data.jsonl") == []


def test_json_2301_metadata():
    line = oscar_line("क\nख", identification={"label": "hi", "prob": 0.97}, harmful_pp=812.5,
                      quality_warnings=["tiny", "header"], categories=["adult"], tlsh="tlsh:T1",
                      sentence_identifications=[None, None])
    [rec] = records_of(line + b"\n", fmt=R.OSCAR2301)
    assert rec == R.RawRecord("f", 0, "क\nख", "hi", 0.97, ("header", "tiny"), 812.5, ("adult",))


def test_json_2201_annotation_is_quality_warnings():
    line = oscar_line("x", identification={"label": "en", "prob": 0.6}, annotation=["short_sentences"])
    [rec] = records_of(line, fmt=R.OSCAR2201)
    assert (rec.lang, rec.lang_prob, rec.quality_warnings, rec.harmful_pp) == ("en", 0.6, ("short_sentences",), None)


BAD_LINE_CASES = [
    ("not_json", b"{not json", R.INVALID_JSON),
    ("json_array", b"[1, 2]", R.INVALID_JSON),
    ("no_content", b'{"metadata": {}}', R.MISSING_CONTENT),
    ("content_null", b'{"content": null}', R.MISSING_CONTENT),
    ("not_utf8", b'{"content": "\xff\xfe"}', R.INVALID_UTF8),
    ("too_long", b'{"content": "' + b"a" * 2000 + b'"}', R.RECORD_TOO_LONG),
]


@pytest.mark.parametrize("name,line,reason", BAD_LINE_CASES, ids=[c[0] for c in BAD_LINE_CASES])
def test_bad_json_lines_become_malformed(name, line, reason):
    good = oscar_line("ठीक", identification={"label": "hi", "prob": 1.0})
    data = good + b"\n" + line + b"\n" + good + b"\n"
    out = records_of(data, fmt=R.OSCAR2301, max_record_bytes=1000)
    assert [type(x).__name__ for x in out] == ["RawRecord", "Malformed", "RawRecord"]
    bad = out[1]
    assert (bad.source, bad.offset, bad.reason, bad.raw_bytes) == ("f", len(good) + 1, reason, len(line))
    assert out[2].offset == len(good) + len(line) + 2


def test_json_bom_at_file_start_is_ignored():
    out = records_of(b"\xef\xbb\xbf" + oscar_line("एक") + b"\n" + oscar_line("दो"), fmt=R.OSCAR2301)
    assert [r.text for r in out] == ["एक", "दो"]


def test_missing_metadata_gives_empty_language():
    [rec] = records_of(b'{"content": "x"}', fmt=R.OSCAR2301)
    assert (rec.lang, rec.lang_prob, rec.quality_warnings) == ("", None, ())


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_stream_keeps_records_before_the_cut(compression):
    rng = random.Random(7)
    words = ["क", "ख", "गम", "घर", "चल", "जल", "तट", "नभ", "पथ", "मन"]
    lines = [oscar_line(f"दस्तावेज़ {i} " + " ".join(rng.choice(words) for _ in range(150))) for i in range(1000)]
    data = b"\n".join(lines) + b"\n"
    packed = gzip.compress(data) if compression == "gzip" else zstandard.ZstdCompressor().compress(data)
    out = records_of(packed[: len(packed) * 2 // 3], fmt=R.OSCAR2301, compression=compression)
    good = [x for x in out if isinstance(x, R.RawRecord)]
    assert 0 < len(good) < 1000
    assert [r.text.split()[1] for r in good] == [str(i) for i in range(len(good))]
    assert isinstance(out[-1], R.Malformed) and out[-1].reason == R.CORRUPT_STREAM
    assert len(out) == len(good) + 1


def test_multi_frame_zstd_and_multi_member_gzip():
    a, b = oscar_line("एक") + b"\n", oscar_line("दो") + b"\n"
    z = zstandard.ZstdCompressor()
    assert [r.text for r in records_of(z.compress(a) + z.compress(b), fmt=R.OSCAR2301, compression="zstd")] == \
        ["एक", "दो"]
    assert [r.text for r in records_of(gzip.compress(a) + gzip.compress(b), fmt=R.OSCAR2201, compression="gzip")] == \
        ["एक", "दो"]


def test_not_gzip_at_all_is_one_malformed_record():
    [bad] = records_of(b"plain text, not gzip\n", fmt=R.OSCAR2201, compression="gzip")
    assert (bad.reason, bad.offset) == (R.CORRUPT_STREAM, 0)


def test_empty_stream_yields_nothing():
    assert records_of(b"", fmt=R.OSCAR2301, compression="zstd") == []
    assert records_of(b"\n\n", fmt=R.OSCAR2019) == []


def test_long_line_memory_is_bounded():
    line = b"x" * (5 << 20)
    out = list(R.iter_lines(io.BytesIO(line + b"\nshort\n"), max_line_bytes=100, chunk_size=1 << 16))
    assert [(x.offset, len(x.data), x.length) for x in out] == [(0, 100, 5 << 20), ((5 << 20) + 1, 5, 5)]


def test_text_2019_documents():
    data = "\ufeffपहला पैरा\nदूसरा पैरा\n\n  \nअगला दस्तावेज़\r\n".encode()
    out = records_of(data, fmt=R.OSCAR2019)
    assert [(r.offset, r.text) for r in out] == [(0, "पहला पैरा\nदूसरा पैरा"), (data.index("अगला".encode()), "अगला दस्तावेज़\r")]
    assert out[0].lang is None


def test_text_2019_bad_utf8_and_too_long():
    data = b"ok line\n\nbad \xff byte\n\n" + b"y" * 50 + b"\n" + b"z" * 60 + b"\n\nlast\n"
    out = records_of(data, fmt=R.OSCAR2019, max_record_bytes=100)
    assert [(x.offset, getattr(x, "reason", "ok")) for x in out] == [
        (0, "ok"), (9, R.INVALID_UTF8), (21, R.RECORD_TOO_LONG), (134, "ok")]
    assert out[2].raw_bytes == 112


@pytest.mark.parametrize("seed", range(5))
def test_byte_ranges_read_every_record_exactly_once(seed):
    rng = random.Random(seed)
    pieces = ["abc", "क ख", "  ", "", "\t", "एक लंबी पंक्ति यहाँ है", '{"content": "x"}']
    for _ in range(40):
        data = ("\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 15))) + rng.choice(["", "\n"])).encode()
        for fmt in (R.OSCAR2019, R.OSCAR2201):
            whole = records_of(data, fmt=fmt)
            split = rng.randint(1, 12)
            got = []
            for start in range(0, max(len(data), 1), split):
                f = io.BytesIO(data)
                pos, prev_blank = R.seek_range_start(f, start)
                lines = R.iter_lines(f, start=pos, max_line_bytes=MAX)
                if fmt == R.OSCAR2019:
                    got += R.read_text_records(lines, source="f", max_record_bytes=MAX, end=start + split,
                                               prev_blank=prev_blank)
                else:
                    got += R.read_json_records(lines, source="f", max_record_bytes=MAX, end=start + split)
            assert got == whole, (data, split)


def _read_2109(text: bytes, meta: list[dict]):
    meta_bytes = b"".join(json.dumps(m).encode() + b"\n" for m in meta)
    return list(R.read_2109_records(R.iter_lines(io.BytesIO(text), max_line_bytes=MAX),
                                    R.iter_lines(io.BytesIO(meta_bytes), max_line_bytes=MAX),
                                    source="hi_part_1.txt", meta_source="hi_meta_part_1.jsonl", max_record_bytes=MAX))


def test_2109_pairs_documents_with_metadata():
    text = "एक\nदो\n\nतीन\n".encode()
    out = _read_2109(text, [{"headers": {}, "offset": 0, "nb_sentences": 2},
                            {"headers": {}, "offset": 2, "nb_sentences": 1}])
    assert [(r.offset, r.text) for r in out] == [(0, "एक\nदो"), (15, "तीन")]


def test_2109_mismatch_missing_and_extra_metadata():
    text = "एक\nदो\n\nतीन\n\nचार\n".encode()
    out = _read_2109(text, [{"nb_sentences": 2}, {"nb_sentences": 5}])
    assert [(x.source, getattr(x, "reason", "ok")) for x in out] == [
        ("hi_part_1.txt", "ok"), ("hi_part_1.txt", R.METADATA_MISMATCH), ("hi_part_1.txt", R.METADATA_MISSING)]
    out = _read_2109("एक\n".encode(), [{"nb_sentences": 1}, {"nb_sentences": 1}])
    assert [(x.source, getattr(x, "reason", "ok")) for x in out] == [
        ("hi_part_1.txt", "ok"), ("hi_meta_part_1.jsonl", R.METADATA_WITHOUT_TEXT)]


def test_real_oscar_2019_samples(shared_corpus):
    for name, n_lines in (("oscar2019_unshuffled_deduplicated_hi_hi_part_1.sample.txt", 12),
                          ("oscar2019_unshuffled_original_hi_hi_part_1.sample.txt", 16)):
        data = (shared_corpus / "oscar" / name).read_bytes()
        out = records_of(data, fmt=R.OSCAR2019)
        assert len(out) == 2 and all(isinstance(r, R.RawRecord) for r in out)
        assert sum(r.text.count("\n") + 1 for r in out) == n_lines
        assert out[0].text.startswith("'आइटम गर्ल' बनकर हिट हुई थीं राखी सावंत")
        # gzip as OSCAR ships it (hi_part_1.txt.gz) reads the same
        assert records_of(gzip.compress(data), fmt=R.OSCAR2019, compression="gzip") == out


def test_real_oscar_2201_sample(shared_corpus):
    data = (shared_corpus / "oscar" / "oscar2201_format_multilingual_sample_NOT_HINDI.jsonl").read_bytes()
    out = records_of(data, fmt=R.OSCAR2201)
    assert len(out) == 63 and all(isinstance(r, R.RawRecord) for r in out)
    assert "hi" not in {r.lang for r in out}
    first = json.loads(data.split(b"\n")[0])
    assert out[0].text == first["content"]
    assert (out[0].lang, out[0].lang_prob) == ("en", pytest.approx(0.6518743))
    assert out[0].quality_warnings == ("footer", "header", "short_sentences")
    # the same bytes compressed as 23.01 give the same records
    assert records_of(zstandard.ZstdCompressor().compress(data), fmt=R.OSCAR2301, compression="zstd") == out
