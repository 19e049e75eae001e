"""Fixtures for the tests marked ``gcs``: a GCS emulator on 127.0.0.1 and TensorFlow's route to it.

Run them with ``pytest -m gcs tests/cloud``. The emulator and the proxy are started once per
session (about 1 s) and stopped at the end; every test gets its own prefix in the bucket.
"""

from __future__ import annotations

import re
import sys
import uuid

import pytest

from tests.cloud.gcs_emulator import StorageEmulator, TensorFlowProxy


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """gcp-storage-emulator with bucket ``test-bucket``; sets the variables every client needs."""
    emulator = StorageEmulator(tmp_path_factory.mktemp("gcs"), bucket="test-bucket").start()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in emulator.env().items():
            mp.setenv(name, value)
        yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def tf_gcs(gcs_emulator):
    """Routes TensorFlow's ``gs://`` filesystem to the emulator (set before TF first opens gs://)."""
    if sys.version_info < (3, 11):
        pytest.skip("the TLS proxy needs asyncio's StreamWriter.start_tls (Python 3.11+)")
    proxy = TensorFlowProxy(gcs_emulator).start()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in proxy.env().items():
            mp.setenv(name, value)
        yield proxy
    proxy.stop()


@pytest.fixture
def gcs_prefix(gcs_emulator, request) -> str:
    """A fresh ``gs://test-bucket/<test name>-<id>`` prefix (no trailing slash)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return gcs_emulator.uri(f"{name}-{uuid.uuid4().hex[:8]}")
