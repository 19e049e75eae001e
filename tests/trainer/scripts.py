"""Test helper: runs a module of this repository as a script under a chosen Keras backend and
returns what it printed as its last ``RESULT {...}`` line (each backend in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "RESULT "


def result_of(proc: subprocess.CompletedProcess) -> dict:
    """The JSON of ``proc``'s last ``RESULT`` line; fails with its output when it has none."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_module(module: str, *args: str, backend: str, env: dict | None = None, timeout: float = 900) -> dict:
    """``python -m module args`` from the repository root with ``KERAS_BACKEND=backend``."""
    environ = {**os.environ, "KERAS_BACKEND": backend, **(env or {})}
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)
    return result_of(proc)
