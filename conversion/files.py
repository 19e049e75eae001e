"""Atomic publication of an output directory, local or ``gs://`` (any ``scheme://`` of ``tf.io.gfile``).

The converter first writes every file into a local staging directory, checks it (``--verify``),
and only then publishes it:

- local output: the staging directory is a hidden sibling of the output (same filesystem), so
  publishing is one ``rename``; an existing output (with ``overwrite``) is renamed away first
  and deleted after.
- remote output: the files are uploaded under a temporary prefix beside the output
  (``PARENT/.tmp-XXXXXXXX-NAME``), then
  copied to the output prefix, then the temporary prefix is deleted. GCS has no directory
  rename; each object appears whole, and the output prefix is filled only after every file
  was uploaded once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from trainer import fileio


def _gfile():
    import tensorflow as tf  # only for remote paths

    return tf.io.gfile


def is_nonempty(path: str) -> bool:
    """True when ``path`` exists and is a file or a directory holding anything."""
    if not fileio.exists(path):
        return False
    if fileio.is_remote(path):
        return not _gfile().isdir(path) or bool(fileio.listdir(path))
    return not os.path.isdir(path) or bool(os.listdir(path))


def check_output_dir(output_dir: str, *, overwrite: bool) -> None:
    """Raises ``FileExistsError`` when ``output_dir`` holds something and ``overwrite`` is false."""
    if not overwrite and is_nonempty(output_dir):
        raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite to replace it")


def make_staging_dir(output_dir: str) -> str:
    """A new empty local directory to build the output in (a hidden sibling for a local output)."""
    if fileio.is_remote(output_dir):
        return tempfile.mkdtemp(prefix="bert-convert-")
    parent, name = os.path.split(os.path.abspath(output_dir.rstrip(os.sep)))
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    return path


def write_files(directory: str, files: dict[str, bytes]) -> None:
    """Writes ``name -> bytes`` into a local directory."""
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def publish(staging_dir: str, output_dir: str, *, overwrite: bool) -> None:
    """Moves the staged files to ``output_dir`` (see the module docstring); removes the staging dir.

    Raises:
        FileExistsError: when the output appeared meanwhile and ``overwrite`` is false.
    """
    check_output_dir(output_dir, overwrite=overwrite)
    if fileio.is_remote(output_dir):
        _publish_remote(staging_dir, output_dir)
        shutil.rmtree(staging_dir, ignore_errors=True)
        return
    output_dir = os.path.abspath(output_dir.rstrip(os.sep))
    old = None
    if os.path.lexists(output_dir):
        old = f"{os.path.dirname(output_dir)}/.{os.path.basename(output_dir)}.old-{uuid.uuid4().hex[:8]}"
        os.replace(output_dir, old)
    os.replace(staging_dir, output_dir)
    if old is not None:
        fileio.remove(old)


def _publish_remote(staging_dir: str, output_dir: str) -> None:
    gfile = _gfile()
    output_dir = output_dir.rstrip("/")
    names = sorted(os.listdir(staging_dir))
    parent, name = output_dir.rsplit("/", 1)
    # Not "{output_dir}.tmp": a name that does not start with the output's name.
    temp_prefix = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}"
    gfile.makedirs(temp_prefix)
    try:
        for file_name in names:
            gfile.copy(os.path.join(staging_dir, file_name), f"{temp_prefix}/{file_name}", overwrite=True)
        if gfile.exists(output_dir):
            gfile.rmtree(output_dir)
        gfile.makedirs(output_dir)
        for file_name in names:
            gfile.copy(f"{temp_prefix}/{file_name}", f"{output_dir}/{file_name}", overwrite=True)
    finally:
        fileio.remove(temp_prefix)


def discard(staging_dir: str) -> None:
    """Removes a staging directory after a failure."""
    shutil.rmtree(staging_dir, ignore_errors=True)
