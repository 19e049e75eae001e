"""File helpers shared by the stages: local paths and gs:// alike, through Beam's FileSystems."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    """Joins path parts for local paths and gs:// URLs."""
    return FileSystems.join(base, *parts) if parts else base


def match_patterns(patterns: Iterable[str]) -> list[str]:
    """Expands glob patterns to a sorted list of file paths.

    Raises:
        FileNotFoundError: naming every pattern that matched no file.
    """
    paths: list[str] = []
    empty: list[str] = []
    for pattern in patterns:
        result = FileSystems.match([pattern])[0]
        found = sorted(m.path for m in result.metadata_list)
        if not found:
            empty.append(pattern)
        paths.extend(found)
    if empty:
        raise FileNotFoundError(f"input pattern(s) matched no file: {', '.join(empty)}")
    return sorted(set(paths))


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that no reader ever sees a partial file.

    The bytes go to a temporary name beside ``path`` first, then are renamed.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_json_atomic(path: str, obj: object) -> None:
    """Writes ``obj`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"))


def match_with_sizes(pattern: str) -> list[tuple[str, int]]:
    """Expands one glob pattern to sorted ``(path, size_in_bytes)`` pairs (empty if none)."""
    result = FileSystems.match([pattern])[0]
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


@contextlib.contextmanager
def atomic_create(path: str) -> Iterator[BinaryIO]:
    """Opens a binary file that appears at ``path`` only once it is complete.

    The bytes are written, uncompressed as given, to a temporary name beside ``path``;
    on success it is renamed to ``path`` (replacing an older file), on error deleted.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    f = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
        f.close()
    except BaseException:
        f.close()
        FileSystems.delete([tmp])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def remove_stale_files(pattern: str, keep: Iterable[str]) -> list[str]:
    """Deletes the files matching ``pattern`` that are not in ``keep``; returns them, sorted.

    A stage calls it once its new output exists, so that shards of an earlier run with another
    ``--num_shards`` (or compression) are not read by the next stage together with the new ones.
    """
    keep = set(keep)
    stale = sorted(path for path, _ in match_with_sizes(pattern) if path not in keep)
    if stale:
        FileSystems.delete(stale)
    return stale
