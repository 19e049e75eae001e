"""Parsing of the OSCAR releases from byte streams (pure Python: no Beam import).

Formats, told apart by the file name (``detect_format``) unless ``--input_format`` says:

==============  ==============================================  ===============================
format          files                                           one record is
==============  ==============================================  ===============================
``oscar2019``   ``*.txt``, ``*.txt.gz``                         a run of non-blank lines
``oscar2109``   ``X.txt[.gz]`` + ``X_meta.jsonl[.gz]``, or      a run of non-blank lines, paired
                ``X_part_N.txt[.gz]`` + ``X_meta_part_N.jsonl   in order with one metadata line
                [.gz]``
``oscar2201``   ``*.jsonl``, ``*.jsonl.gz``                     one JSON line
``oscar2301``   ``*.jsonl.zst``                                 one JSON line
==============  ==============================================  ===============================

A ``.txt`` file is OSCAR 21.09 when its metadata companion exists beside it; that
companion is then read with it and never as a file of its own. Compression follows
the last suffix (``.gz``, ``.zst``/``.zstd``, anything else: none).

Every record is located by its source path and the byte offset of its first byte in the
decompressed stream. Records that cannot be read become ``Malformed`` items with a reason
(``MALFORMED_REASONS``) instead of exceptions, so one bad record or a truncated file never
stops a run.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

import zstandard

AUTO = "auto"
OSCAR2019 = "oscar2019"
OSCAR2109 = "oscar2109"
OSCAR2201 = "oscar2201"
OSCAR2301 = "oscar2301"
FORMATS = (AUTO, OSCAR2019, OSCAR2109, OSCAR2201, OSCAR2301)
JSON_FORMATS = (OSCAR2201, OSCAR2301)

INVALID_JSON = "invalid_json"
MISSING_CONTENT = "missing_content"
INVALID_UTF8 = "invalid_utf8"
RECORD_TOO_LONG = "record_too_long"
CORRUPT_STREAM = "corrupt_stream"
EMPTY_FILE = "empty_file"
UNREADABLE_FILE = "unreadable_file"
METADATA_MISMATCH = "metadata_mismatch"
METADATA_MISSING = "metadata_missing"
METADATA_WITHOUT_TEXT = "metadata_without_text"
MALFORMED_REASONS = (
    INVALID_JSON, MISSING_CONTENT, INVALID_UTF8, RECORD_TOO_LONG, CORRUPT_STREAM, EMPTY_FILE,
    UNREADABLE_FILE, METADATA_MISMATCH, METADATA_MISSING, METADATA_WITHOUT_TEXT,
)

#: Bytes of a malformed record kept in ``rejected/`` (the rest is counted in ``raw_bytes``).
RAW_PREVIEW_BYTES = 64 * 1024
_READ_CHUNK = 1 << 20
_RAW_CHUNK = 1 << 16
_BLANK_BYTES = b" \t\r\x0b\x0c"
_BOM = b"\xef\xbb\xbf"

_META_RE = re.compile(r"^(?P<stem>.*)_meta(?P<part>_part_\d+)?\.jsonl(?P<gz>\.gz)?$")
_TEXT_RE = re.compile(r"^(?P<stem>.*?)(?P<part>_part_\d+)?\.txt(?P<gz>\.gz)?$")


class RawRecord(NamedTuple):
    """One document as OSCAR stores it, before any cleaning."""

    source: str
    offset: int
    text: str
    lang: str | None = None
    lang_prob: float | None = None
    quality_warnings: tuple[str, ...] = ()
    harmful_pp: float | None = None
    categories: tuple[str, ...] = ()


class Malformed(NamedTuple):
    """A record that could not be read: where, why, and the start of its bytes."""

    source: str
    offset: int
    reason: str
    detail: str
    raw: str = ""
    raw_bytes: int = 0


class Line(NamedTuple):
    """A line of a byte stream: ``data`` is cut to the reader's limit, ``length`` is not."""

    offset: int
    data: bytes
    length: int
    error: str | None = None


# ---------------------------------------------------------------------------- file names


def compression_of(path: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or None, from the last suffix of ``path``."""
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def _basename(path: str) -> tuple[str, str]:
    cut = path.rfind("/") + 1
    return path[:cut], path[cut:]


def text_companion_of_meta(path: str) -> list[str]:
    """The possible OSCAR 21.09 text files that a ``*_meta[_part_N].jsonl[.gz]`` file describes."""
    folder, name = _basename(path)
    m = _META_RE.match(name)
    if not m:
        return []
    stem = folder + m["stem"] + (m["part"] or "")
    return [stem + ".txt.gz", stem + ".txt"]


def meta_companion_of_text(path: str) -> list[str]:
    """The possible OSCAR 21.09 metadata files of a text file ``X[_part_N].txt[.gz]``."""
    folder, name = _basename(path)
    m = _TEXT_RE.match(name)
    if not m:
        return []
    stem = folder + m["stem"] + "_meta" + (m["part"] or "")
    return [stem + ".jsonl.gz", stem + ".jsonl"]


def detect_format(path: str, exists: Callable[[str], bool]) -> tuple[str, str | None]:
    """Tells the OSCAR format of ``path`` from its name (see the module docstring).

    Args:
        path: a file path or URL.
        exists: tells whether a path exists (used to find 21.09 metadata companions).

    Returns:
        ``(format, meta_path)``; ``meta_path`` is the metadata file of an OSCAR 21.09 text file.

    Raises:
        ValueError: naming the file when its name says nothing about its format.
    """
    name = _basename(path)[1]
    if name.endswith((".jsonl.zst", ".jsonl.zstd")):
        return OSCAR2301, None
    if name.endswith((".jsonl", ".jsonl.gz")):
        return OSCAR2201, None
    if name.endswith((".txt", ".txt.gz")):
        meta = next((m for m in meta_companion_of_text(path) if exists(m)), None)
        return (OSCAR2109, meta) if meta else (OSCAR2019, None)
    raise ValueError(
        f"cannot tell the OSCAR format of {path} from its name (expected .txt, .txt.gz, .jsonl, "
        f".jsonl.gz or .jsonl.zst); pass --input_format"
    )


# ---------------------------------------------------------------------------- streams


class _FramedReader:
    """Decompresses concatenated frames (gzip members, Zstandard frames) from a raw stream.

    Data is returned as soon as it is decompressed, so a truncated file still yields
    everything before the cut; the read after that raises ``EOFError``. (``gzip.GzipFile``
    drops the data of the read that hits the cut, and ``zstandard``'s stream reader
    reports no error at all for a frame that stops in the middle.)
    """

    def __init__(self, raw: BinaryIO, new_decompressor: Callable[[], object], name: str):
        self._raw = raw
        self._new = new_decompressor
        self._name = name
        self._obj = None
        self._input = b""
        self._done = False
        self._error: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        out: list[bytes] = []
        got = 0
        while not self._done and (size < 0 or got < size):
            if self._obj is not None and self._obj.eof:
                self._input = self._obj.unused_data + self._input
                self._obj = None
            if not self._input:
                self._input = self._raw.read(_RAW_CHUNK)
                if not self._input:
                    self._done = True
                    if self._obj is not None:
                        self._error = EOFError(f"{self._name} stream ends in the middle of a frame (truncated file)")
                        if not out:
                            raise self._error
                    break
            if self._obj is None:
                self._obj = self._new()
            data, self._input = self._input, b""
            try:
                chunk = self._obj.decompress(data)
            except Exception as e:  # noqa: BLE001 - zlib.error, ZstdError: reported after the good data
                self._done = True
                self._error = OSError(f"corrupt {self._name} data: {e}")
                if not out:
                    raise self._error from e
                break
            if chunk:
                out.append(chunk)
                got += len(chunk)
        return b"".join(out)


def open_decompressed(raw: BinaryIO, compression: str | None) -> BinaryIO:
    """Wraps a raw byte stream in the decompressor ``compression`` names (None: as is)."""
    if compression == "gzip":
        return _FramedReader(raw, lambda: zlib.decompressobj(wbits=31), "gzip")
    if compression == "zstd":
        dctx = zstandard.ZstdDecompressor()
        return _FramedReader(raw, dctx.decompressobj, "Zstandard")
    return raw


def iter_lines(
    stream: BinaryIO, *, start: int = 0, max_line_bytes: int, chunk_size: int = _READ_CHUNK
) -> Iterator[Line]:
    """Yields the lines of a binary stream, each cut to ``max_line_bytes``.

    Memory stays bounded by ``chunk_size + max_line_bytes`` whatever the line lengths. A
    read error (a truncated or corrupt compressed stream) ends the iteration with one
    ``Line`` whose ``error`` says what happened and whose data is the partial line.

    Args:
        stream: positioned at byte ``start`` of the (decompressed) data.
        start: offset of the stream's position, so that ``Line.offset`` is absolute.
        max_line_bytes: bytes of a line kept in ``Line.data``.
        chunk_size: bytes read at a time.
    """
    parts: list[bytes] = []
    kept = 0
    length = 0
    line_start = start
    while True:
        try:
            chunk = stream.read(chunk_size)
        except (OSError, EOFError, zstandard.ZstdError, ValueError) as e:
            yield Line(line_start, b"".join(parts), length, f"{type(e).__name__}: {e}")
            return
        if not chunk:
            break
        pos = 0
        while True:
            nl = chunk.find(b"\n", pos)
            piece = chunk[pos:] if nl < 0 else chunk[pos:nl]
            room = max_line_bytes - kept
            if room > 0:
                take = piece if len(piece) <= room else piece[:room]
                parts.append(take)
                kept += len(take)
            length += len(piece)
            if nl < 0:
                break
            yield Line(line_start, parts[0] if len(parts) == 1 else b"".join(parts), length)
            line_start += length + 1
            parts, kept, length = [], 0, 0
            pos = nl + 1
    if length:
        yield Line(line_start, b"".join(parts), length)


def seek_range_start(f: BinaryIO, start: int) -> tuple[int, bool]:
    """Finds where a reader of the byte range starting at ``start`` begins.

    Args:
        f: a seekable binary file (uncompressed).
        start: the first byte of the range.

    Returns:
        ``(pos, prev_blank)``: ``pos`` is the first line start at or after ``start`` (the
        file is left positioned there); ``prev_blank`` tells whether the line before
        ``pos`` is blank (whitespace only), which is what a text document needs to start.
    """
    if start <= 0:
        f.seek(0)
        return 0, True
    # Backwards from start - 1: is the part of its line before `start` blank?
    blank = True
    end = start
    first = True
    while end > 0:
        begin = max(0, end - 4096)
        f.seek(begin)
        window = f.read(end - begin)
        if first and window.endswith(b"\n"):
            window = window[:-1]  # byte start - 1 ends its line
        first = False
        stripped = window.rstrip(_BLANK_BYTES)
        if stripped:
            blank = stripped.endswith(b"\n")
            break
        end = begin
    # Forwards from start: the rest of that line.
    f.seek(start - 1)
    if f.read(1) == b"\n":
        f.seek(start)
        return start, blank
    pos = start
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            return pos, blank
        nl = chunk.find(b"\n")
        piece = chunk if nl < 0 else chunk[:nl]
        if piece.strip(_BLANK_BYTES):
            blank = False
        if nl >= 0:
            pos += nl + 1
            f.seek(pos)
            return pos, blank
        pos += len(chunk)


# ---------------------------------------------------------------------------- records


def _preview(data: bytes) -> str:
    return data[:RAW_PREVIEW_BYTES].decode("utf-8", errors="backslashreplace")


def _float_or_none(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str_tuple(value) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(sorted({v for v in value if isinstance(v, str)}))
    return ()


def parse_json_record(line: Line, *, source: str, max_record_bytes: int) -> RawRecord | Malformed:
    """Parses one OSCAR 22.01 / 23.01 JSON line.

    Both schemas are accepted in both formats: ``metadata.quality_warnings`` (23.01) or
    ``metadata.annotation`` / ``annotations`` (22.01) give the quality warnings;
    ``harmful_pp`` and ``categories`` exist only in 23.01. A missing or unreadable
    ``metadata.identification`` gives the language ``""`` (dropped by the language filter).
    """
    if line.length > max_record_bytes:
        return Malformed(source, line.offset, RECORD_TOO_LONG,
                         f"{line.length} bytes > limit {max_record_bytes}", _preview(line.data), line.length)
    data = line.data[len(_BOM):] if line.offset == 0 and line.data.startswith(_BOM) else line.data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Malformed(source, line.offset, INVALID_UTF8, str(e), _preview(line.data), line.length)
    try:
        obj = json.loads(text)
    except ValueError as e:
        return Malformed(source, line.offset, INVALID_JSON, str(e), _preview(line.data), line.length)
    if not isinstance(obj, dict):
        return Malformed(source, line.offset, INVALID_JSON, f"a JSON {type(obj).__name__}, not an object",
                         _preview(line.data), line.length)
    content = obj.get("content")
    if not isinstance(content, str):
        detail = "no 'content' key" if "content" not in obj else f"'content' is {type(content).__name__}"
        return Malformed(source, line.offset, MISSING_CONTENT, detail, _preview(line.data), line.length)
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    ident = meta.get("identification")
    ident = ident if isinstance(ident, dict) else {}
    label = ident.get("label")
    warnings = meta.get("quality_warnings", meta.get("annotation", meta.get("annotations")))
    return RawRecord(
        source=source,
        offset=line.offset,
        text=content,
        lang=label if isinstance(label, str) else "",
        lang_prob=_float_or_none(ident.get("prob")),
        quality_warnings=_str_tuple(warnings),
        harmful_pp=_float_or_none(meta.get("harmful_pp", meta.get("harmful_ppl"))),
        categories=_str_tuple(meta.get("categories")),
    )


def read_json_records(
    lines: Iterator[Line], *, source: str, max_record_bytes: int, end: int | None = None
) -> Iterator[RawRecord | Malformed]:
    """Parses JSON lines into records; blank lines are skipped, a stream error is one ``Malformed``.

    Args:
        lines: from ``iter_lines``.
        source: the file, as written into every record.
        max_record_bytes: longer lines are ``record_too_long``.
        end: stop at the first line that starts at or after this offset (a byte range's end).
    """
    for line in lines:
        if end is not None and line.offset >= end:
            return
        if line.error is not None:
            yield Malformed(source, line.offset, CORRUPT_STREAM, line.error, _preview(line.data), line.length)
            return
        if not line.data.strip():
            continue
        yield parse_json_record(line, source=source, max_record_bytes=max_record_bytes)


class TextDocument(NamedTuple):
    """A blank-line-separated document of a text file, before decoding."""

    offset: int
    lines: list[bytes]
    size: int
    too_long: bool
    error: str | None = None


def iter_text_documents(
    lines: Iterator[Line], *, max_record_bytes: int, end: int | None = None, prev_blank: bool = True
) -> Iterator[TextDocument]:
    """Groups lines into documents: runs of non-blank lines separated by blank lines.

    A document belongs to the byte range where its first line starts, so that readers of
    neighbouring ranges neither lose nor repeat one.

    Args:
        lines: from ``iter_lines``, starting at a line start.
        max_record_bytes: a longer document keeps only its first bytes and is flagged.
        end: documents starting at or after this offset belong to the next range.
        prev_blank: whether the line before the first one is blank (True at a file's start).
    """
    doc: TextDocument | None = None
    lines_kept: list[bytes] = []
    size = 0
    too_long = False
    for line in lines:
        if line.error is not None:
            if doc is not None or line.length or line.data:
                offset = doc.offset if doc is not None else line.offset
                lines_kept.append(line.data)
                yield TextDocument(offset, lines_kept, size + line.length, too_long, line.error)
            else:
                yield TextDocument(line.offset, [], 0, False, line.error)
            return
        blank = not line.data.strip(_BLANK_BYTES) and line.length == len(line.data)
        if blank:
            if doc is not None:
                yield doc._replace(lines=lines_kept, size=size, too_long=too_long)
                doc = None
            prev_blank = True
            continue
        if doc is None:
            if not prev_blank:
                continue
            if end is not None and line.offset >= end:
                return
            doc = TextDocument(line.offset, [], 0, False)
            lines_kept, size, too_long = [], 0, False
        size += line.length + 1
        if line.length > len(line.data) or size > max_record_bytes:
            too_long = True
        if not too_long:
            lines_kept.append(line.data)
        elif sum(len(x) for x in lines_kept) < RAW_PREVIEW_BYTES:
            lines_kept.append(line.data[:RAW_PREVIEW_BYTES])
        prev_blank = False
    if doc is not None:
        yield doc._replace(lines=lines_kept, size=size, too_long=too_long)


def text_document_record(doc: TextDocument, *, source: str, max_record_bytes: int) -> RawRecord | Malformed:
    """Turns a text document into a record (OSCAR 2019: no metadata), or a ``Malformed``."""
    data = b"\n".join(doc.lines)
    if doc.error is not None:
        return Malformed(source, doc.offset, CORRUPT_STREAM, doc.error, _preview(data), doc.size)
    if doc.too_long:
        return Malformed(source, doc.offset, RECORD_TOO_LONG,
                         f"{doc.size} bytes > limit {max_record_bytes}", _preview(data), doc.size)
    if doc.offset == 0 and data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Malformed(source, doc.offset, INVALID_UTF8, str(e), _preview(data), doc.size)
    return RawRecord(source=source, offset=doc.offset, text=text)


def read_text_records(
    lines: Iterator[Line], *, source: str, max_record_bytes: int, end: int | None = None,
    prev_blank: bool = True,
) -> Iterator[RawRecord | Malformed]:
    """Reads OSCAR 2019 text (also BERT's one-sentence-per-line files) into records."""
    for doc in iter_text_documents(lines, max_record_bytes=max_record_bytes, end=end, prev_blank=prev_blank):
        yield text_document_record(doc, source=source, max_record_bytes=max_record_bytes)


def read_2109_records(
    text_lines: Iterator[Line], meta_lines: Iterator[Line], *, source: str, meta_source: str,
    max_record_bytes: int,
) -> Iterator[RawRecord | Malformed]:
    """Reads an OSCAR 21.09 text file with its metadata file.

    The n-th document of the text file is paired with the n-th non-blank line of the
    metadata file; its line count must equal the metadata's ``nb_sentences``, or the
    document is ``metadata_mismatch``. A document without a metadata line is
    ``metadata_missing``; a metadata line without a document is ``metadata_without_text``
    (located in the metadata file). 21.09 has no per-document language or quality fields.
    """
    metas = (m for m in meta_lines if m.error is not None or m.data.strip())
    for doc in iter_text_documents(text_lines, max_record_bytes=max_record_bytes):
        record = text_document_record(doc, source=source, max_record_bytes=max_record_bytes)
        meta = next(metas, None)
        if isinstance(record, Malformed):
            yield record
            continue
        if meta is None or meta.error is not None:
            why = "no metadata line left" if meta is None else f"metadata stream error: {meta.error}"
            yield Malformed(source, doc.offset, METADATA_MISSING, f"{why} in {meta_source}",
                            _preview(record.text.encode()), doc.size)
            continue
        try:
            obj = json.loads(meta.data.decode("utf-8"))
            expected = obj["nb_sentences"]
        except (ValueError, KeyError, TypeError) as e:
            yield Malformed(source, doc.offset, METADATA_MISMATCH,
                            f"unreadable metadata at offset {meta.offset} of {meta_source}: {e}",
                            _preview(record.text.encode()), doc.size)
            continue
        nb_lines = len(doc.lines)
        if expected != nb_lines:
            yield Malformed(source, doc.offset, METADATA_MISMATCH,
                            f"document has {nb_lines} lines, metadata at offset {meta.offset} of "
                            f"{meta_source} says nb_sentences={expected}",
                            _preview(record.text.encode()), doc.size)
            continue
        yield record
    for meta in metas:
        if meta.error is not None:
            yield Malformed(meta_source, meta.offset, CORRUPT_STREAM, meta.error, _preview(meta.data), meta.length)
            return
        yield Malformed(meta_source, meta.offset, METADATA_WITHOUT_TEXT,
                        f"no document left in {source} for this metadata line", _preview(meta.data), meta.length)
