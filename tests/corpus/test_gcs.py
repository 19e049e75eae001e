"""The corpus stage reading from and writing to gs:// (a GCS emulator on 127.0.0.1)."""

from __future__ import annotations

import gzip
import json
import socket

import pytest

from beam_pipelines.corpus import stage
from tests.corpus.helpers import run_corpus

pytestmark = pytest.mark.gcs


@pytest.fixture
def gcs_emulator(monkeypatch):
    """A gcp-storage-emulator with bucket ``corpus-test``; Beam's GCS client talks to it anonymously."""
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    from apache_beam.internal.gcp import auth
    from google.cloud import storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.create_server("127.0.0.1", port, in_memory=True, default_bucket="corpus-test")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # Skip the search for credentials (metadata server, ~20 s offline): use an anonymous client.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    try:
        yield storage.Client.create_anonymous_client().bucket("corpus-test")
    finally:
        server.stop()


def test_stage_on_gcs(gcs_emulator, tmp_path):
    bucket = gcs_emulator
    sample = stage.DEFAULT_INPUT.replace("*", "hi_meta_part_1")
    bucket.blob("in/hi_meta_part_1.jsonl.zst").upload_from_filename(sample)
    _, report = run_corpus(["--input", "gs://corpus-test/in/*.jsonl.zst", "--output_dir", "gs://corpus-test/out",
                            "--num_shards", "2"])
    _, local = run_corpus(["--input", sample, "--output_dir", str(tmp_path / "local"), "--num_shards", "2"])
    assert report["records_read"] == local["records_read"] == 447
    assert report["documents_kept"] == local["documents_kept"]
    for name in ("train-00000-of-00002.txt.gz", "train-00001-of-00002.txt.gz", "validation-00000-of-00001.txt.gz"):
        remote = bucket.blob(f"out/corpus/{name}").download_as_bytes()
        assert gzip.decompress(remote) == gzip.decompress((tmp_path / "local" / "corpus" / name).read_bytes())
    remote_report = json.loads(bucket.blob("out/reports/corpus.json").download_as_bytes())
    assert remote_report["documents_kept"] == report["documents_kept"]
