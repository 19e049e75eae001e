"""Shared fixtures. Tests that read ../shared skip with a reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = Path(os.environ.get("HINDI_BERT_SHARED_CORPUS", REPO_ROOT.parent / "shared" / "corpus" / "hi"))


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """The shared Hindi corpus (``../shared/corpus/hi``); skips the test where it is absent."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {SHARED_CORPUS} (set HINDI_BERT_SHARED_CORPUS)")
    return SHARED_CORPUS


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
