"""From input patterns to read tasks: which files, which format, which byte ranges.

Compressed files cannot be split, so each is one task read whole (the records are
reshuffled afterwards so that the cleaning spreads over the workers). Uncompressed
OSCAR 2019 text and JSON-lines files are cut into byte ranges of ``split_bytes``;
a range owns the records that start inside it (``readers.seek_range_start``), so the
ranges of a file read every record exactly once. OSCAR 21.09 text is read whole with
its metadata file, because the two are paired by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from beam_pipelines import io_utils
from beam_pipelines.corpus import readers


class ReadTask(NamedTuple):
    """One unit of reading: a whole file (``end`` None) or the byte range ``[start, end)``."""

    path: str
    fmt: str
    start: int
    end: int | None
    size: int
    meta_path: str | None = None


def _exists_in(known: set[str]):
    def exists(path: str) -> bool:
        return path in known or io_utils.exists(path)
    return exists


def plan_reads(patterns: Sequence[str], *, input_format: str, split_bytes: int) -> list[ReadTask]:
    """Expands the input patterns into read tasks, sorted by path and offset.

    Args:
        patterns: glob patterns, local or ``gs://``.
        input_format: ``auto`` (from each file name) or one of ``readers.FORMATS``.
        split_bytes: size of the byte ranges of uncompressed 2019 and JSON-lines files.

    Raises:
        FileNotFoundError: naming every pattern that matched no file, or an OSCAR 21.09
            text file without its metadata file.
        ValueError: naming a file whose format cannot be told from its name.
    """
    sizes: dict[str, int] = {}
    empty = []
    for pattern in patterns:
        found = io_utils.match_with_sizes(pattern)
        if not found:
            empty.append(pattern)
        sizes.update(found)
    if empty:
        raise FileNotFoundError(f"--input: pattern(s) matched no file: {', '.join(empty)}")
    exists = _exists_in(set(sizes))

    # OSCAR 21.09 metadata files are read with their text file, never on their own.
    if input_format in (readers.AUTO, readers.OSCAR2109):
        for path in sorted(sizes):
            text = next((t for t in readers.text_companion_of_meta(path) if exists(t)), None)
            if text is None:
                continue
            del sizes[path]
            if text not in sizes:
                sizes.update(io_utils.match_with_sizes(text))

    tasks: list[ReadTask] = []
    for path in sorted(sizes):
        size = sizes[path]
        if input_format == readers.AUTO:
            fmt, meta = readers.detect_format(path, exists)
        elif input_format == readers.OSCAR2109:
            fmt = input_format
            meta = next((m for m in readers.meta_companion_of_text(path) if exists(m)), None)
            if meta is None:
                raise FileNotFoundError(
                    f"--input_format=oscar2109: no metadata file for {path} "
                    f"(looked for {', '.join(readers.meta_companion_of_text(path)) or 'X_meta.jsonl.gz'})"
                )
        else:
            fmt, meta = input_format, None
        if readers.compression_of(path) or fmt == readers.OSCAR2109 or size <= split_bytes:
            tasks.append(ReadTask(path, fmt, 0, None, size, meta))
            continue
        for start in range(0, size, split_bytes):
            tasks.append(ReadTask(path, fmt, start, min(start + split_bytes, size), size, meta))
    return tasks
