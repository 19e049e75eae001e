"""The corpus stage reading from and writing to gs:// (a GCS emulator on 127.0.0.1)."""

from __future__ import annotations

import gzip
import json

import pytest

from beam_pipelines.corpus import stage
from tests.corpus.helpers import run_corpus

pytestmark = pytest.mark.gcs


@pytest.fixture
def gcs_bucket(tmp_path):
    """The project's GCS emulator (``tests.cloud.gcs_emulator``) and its bucket, as a client object."""
    pytest.importorskip("gcp_storage_emulator")
    from google.cloud import storage

    from tests.cloud.gcs_emulator import StorageEmulator

    emulator = StorageEmulator(tmp_path / "gcs", bucket="corpus-test").start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in emulator.env().items():
                mp.setenv(name, value)
            yield storage.Client().bucket("corpus-test")
    finally:
        emulator.stop()


def test_stage_on_gcs(gcs_bucket, tmp_path):
    bucket = gcs_bucket
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
