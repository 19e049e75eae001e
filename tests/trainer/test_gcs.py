"""trainer.task with data and model dir on gs:// (a GCS emulator on 127.0.0.1; ``pytest -m gcs``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.fixtures import write_pretraining_data

pytestmark = pytest.mark.gcs
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gcs_env(tmp_path_factory):
    """Environment routing google-cloud-storage and TensorFlow's gs:// to the emulator."""
    from tests.cloud.gcs_emulator import StorageEmulator, TensorFlowProxy

    emulator = StorageEmulator(tmp_path_factory.mktemp("gcs"), bucket="trainer-bucket").start()
    proxy = TensorFlowProxy(emulator).start()
    yield {**os.environ, **emulator.env(), **proxy.env(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proxy.stop()
    emulator.stop()


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_train_resume_and_export_on_gcs(gcs_env, tmp_path):
    local = write_pretraining_data(str(tmp_path / "seq32"), num_train=64, num_eval=16)
    data = "gs://trainer-bucket/out/pretraining/seq32"
    model = "gs://trainer-bucket/runs/tiny"
    upload = (
        "import sys, os, tensorflow as tf\n"
        "src, dst = sys.argv[1], sys.argv[2]\n"
        "tf.io.gfile.makedirs(dst)\n"
        "for n in os.listdir(src): tf.io.gfile.copy(os.path.join(src, n), dst + '/' + n)\n"
    )
    _run(["-c", upload, local, data], gcs_env)
    common = [
        "-m", "trainer.task", "--data_dir", data, "--model_dir", model, "--model_size", "tiny",
        "--max_position_embeddings", "64", "--batch_size", "8", "--log_every", "2",
        "--checkpoint_every", "2", "--keep_checkpoints", "1", "--eval_steps", "1", "--no-jit_compile",
    ]  # fmt: skip
    _run([*common, "--train_steps", "4"], gcs_env)
    resumed = _run([*common, "--train_steps", "6"], gcs_env)
    assert f"resumed from checkpoint at step 4 ({model}/checkpoints/ckpt-000000004)" in resumed.stdout

    check = (
        "import sys, tensorflow as tf\n"
        "from trainer.export import load_export\n"
        "config, weights, state = load_export(sys.argv[1] + '/export')\n"
        "print('STEP', state['step'], len(weights), config.vocab_size)\n"
        "print('CKPTS', sorted(tf.io.gfile.listdir(sys.argv[1] + '/checkpoints')))\n"
    )
    out = _run(["-c", check, model], gcs_env).stdout
    assert "STEP 6 46 60" in out
    assert "CKPTS ['ckpt-000000006.json', 'ckpt-000000006.safetensors']" in out
