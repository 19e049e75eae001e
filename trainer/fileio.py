"""Small file helpers for local paths and ``gs://`` URLs.

Local paths use the standard library, so the model, config and export code runs on machines
without TensorFlow (the JAX GPU benchmark). Any ``scheme://`` path goes through
``tf.io.gfile``, imported only then.

Atomic writes: a file is written under a temporary name in the same directory, then renamed.
On a local disk the rename is atomic; on GCS an object appears whole or not at all, so a
reader never sees a half-written file under the final name.
"""

from __future__ import annotations

import glob as _glob
import os
import shutil
import uuid


def is_remote(path: str) -> bool:
    return "://" in path


def _gfile():
    import tensorflow as tf  # only for remote paths

    return tf.io.gfile


def join(*parts: str) -> str:
    if is_remote(parts[0]):
        return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])
    return os.path.join(*parts)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory; [] when it does not exist."""
    if not exists(path):
        return []
    if is_remote(path):
        return [n.rstrip("/") for n in _gfile().listdir(path)]
    return os.listdir(path)


def glob(pattern: str) -> list[str]:
    return sorted(_gfile().glob(pattern) if is_remote(pattern) else _glob.glob(pattern))


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that ``path`` is either absent, old, or complete."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    if is_remote(path):
        gf = _gfile()
        with gf.GFile(tmp, "wb") as f:
            f.write(data)
        gf.rename(tmp, path, overwrite=True)
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove(path: str) -> None:
    """Removes a file or a directory tree; no error when absent."""
    if is_remote(path):
        gf = _gfile()
        if gf.isdir(path):
            gf.rmtree(path)
        elif gf.exists(path):
            gf.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
