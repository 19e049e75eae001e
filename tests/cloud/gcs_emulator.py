"""Google Cloud Storage on 127.0.0.1 for tests, for every client this project uses.

- ``StorageEmulator`` runs gcp-storage-emulator (in memory) in a subprocess on a free port,
  with one bucket. google-cloud-storage and Beam's GCS IO reach it through
  ``STORAGE_EMULATOR_HOST``. Each process would first spend about 20 s looking for Google
  credentials (Beam retries ``google.auth.default()`` with back-off, then connects
  anonymously); ``env()`` points ``GOOGLE_APPLICATION_CREDENTIALS`` at an ``authorized_user``
  file holding an access token that expires in 2999, so the lookup succeeds at once and no
  token is ever refreshed. Subprocesses (Beam's multi-processing workers) inherit it.
- ``TensorFlowProxy`` lets TensorFlow's ``gs://`` filesystem (hard-coded endpoints, no emulator
  variable) reach the same emulator: a TLS-intercepting proxy (``tls_proxy.py``) with a test
  CA, used through ``ALL_PROXY``, ``CURL_CA_BUNDLE`` and ``GOOGLE_AUTH_TOKEN_FOR_TESTING``.

Run as ``python -m tests.cloud.gcs_emulator --port P --bucket B``, this module serves the
emulator with one fix: gcp-storage-emulator 2026.7.19 crashes (``len(None)`` in
``_media_upload``, the client sees an empty reply) on a ``uploadType=media`` upload with an
empty body, which TensorFlow sends for ``makedirs`` and for empty files; the fix reads an
absent body as ``b""``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PROJECT = "emulator-project"
ACCESS_TOKEN = "emulator-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class StorageEmulator:
    """gcp-storage-emulator in a subprocess, with one bucket and offline credentials.

    Args:
        workdir: where the credentials file and the emulator's log go.
        bucket: the bucket created at start.
    """

    def __init__(self, workdir: Path, bucket: str = "test-bucket") -> None:
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.port = 0
        self._process: subprocess.Popen | None = None
        self.log_path = self.workdir / "gcs_emulator.log"
        self.credentials_path = self.workdir / "emulator_credentials.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(self, *parts: str) -> str:
        """``gs://BUCKET/part/part``."""
        return "/".join((f"gs://{self.bucket}", *parts))

    def env(self) -> dict[str, str]:
        """Environment for google-cloud-storage and Beam (this process and its children)."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_path),
            "GOOGLE_CLOUD_PROJECT": PROJECT,
        }

    def start(self, timeout_s: float = 30.0) -> StorageEmulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials_path.write_text(json.dumps({
            "type": "authorized_user", "client_id": "emulator", "client_secret": "emulator",
            "refresh_token": "emulator", "token": ACCESS_TOKEN, "expiry": "2999-01-01T00:00:00Z",
        }))
        self.port = free_port()
        cmd = [sys.executable, "-m", "tests.cloud.gcs_emulator", "--port", str(self.port), "--bucket", self.bucket]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {self._process.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gcp-storage-emulator not ready after {timeout_s} s:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class TensorFlowProxy:
    """The TLS-intercepting proxy that routes TensorFlow's GCS requests to ``emulator``."""

    def __init__(self, emulator: StorageEmulator) -> None:
        self.emulator = emulator
        self.port = 0
        self._process: subprocess.Popen | None = None
        self.log_path = emulator.workdir / "tls_proxy.log"
        self.ca_path = emulator.workdir / "tls" / "ca.pem"

    def env(self) -> dict[str, str]:
        """Environment for TensorFlow's ``gs://`` filesystem.

        TensorFlow 2.21's libcurl ignored ``https_proxy``/``HTTPS_PROXY`` here but honours
        ``ALL_PROXY``; ``NO_PROXY`` keeps the other clients' plain-HTTP requests to the
        emulator direct.
        """
        return {
            "ALL_PROXY": f"http://127.0.0.1:{self.port}",
            "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(self.ca_path),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": ACCESS_TOKEN,
        }

    def start(self, timeout_s: float = 30.0) -> TensorFlowProxy:
        from tests.cloud.tls_proxy import write_test_ca

        ca, cert, key = write_test_ca(self.ca_path.parent)
        cmd = [sys.executable, "-m", "tests.cloud.tls_proxy", "--backend", f"127.0.0.1:{self.emulator.port}",
               "--cert", str(cert), "--key", str(key)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.startswith(b"READY"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"TLS proxy did not start:\n{_tail(self.log_path)}")
            line = self._process.stdout.readline()
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
            self._process = None


def _serve(port: int, bucket: str) -> None:
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.server import create_server

    media_upload = objects._media_upload

    def media_upload_allowing_empty_body(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    objects._media_upload = media_upload_allowing_empty_body
    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gcp-storage-emulator on 127.0.0.1, in memory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("PROJECT_NUMBER", "1234")
    _serve(args.port, args.bucket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
