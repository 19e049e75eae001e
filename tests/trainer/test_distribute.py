"""``trainer.distribute``: which devices count as bfloat16-capable for ``--precision auto``, and
which platform a JAX job runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import distribute

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ("9.0", True),  # H100, H200
        ("8.0", True),  # A100
        ((8, 6), True),  # A10, RTX 30xx, as TensorFlow reports it
        ("7.5", False),  # T4
        ((7, 0), False),  # V100
        (None, False),
        ("", False),
        ("unknown", False),
    ],
)
def test_gpu_has_bf16_from_compute_capability(capability, expected):
    assert distribute.gpu_has_bf16(capability) is expected


def test_cpu_runtime_keeps_float32_for_auto():
    runtime = distribute.create_runtime(strategy="cpu", tpu=None, cpu_replicas=0, jit_compile=True)
    assert (runtime.platform, runtime.bf16, runtime.num_replicas) == ("cpu", False, 1)


def _jax_task(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    # JAX_PLATFORMS names a platform this machine lacks, as a GPU-less run of a job script made
    # for a GPU machine would.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cuda"}
    argv = [
        sys.executable, "-m", "trainer.task", "--synthetic_data", "--vocab_size", "100", "--model_size", "tiny",
        "--batch_size", "4", "--train_steps", "2", "--log_every", "2", "--checkpoint_every", "2",
        "--eval_steps", "1", "--model_dir", str(tmp_path / "model"), *extra,
    ]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_jax_strategy_cpu_puts_the_job_on_the_cpu_whatever_jax_platforms_says(tmp_path):
    proc = _jax_task(tmp_path, "--strategy", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--strategy cpu: JAX_PLATFORMS=cuda replaced by cpu" in proc.stdout
    assert "backend jax on JAX cpu x1 over 1 host(s)" in proc.stdout
    assert os.path.exists(tmp_path / "model" / "export" / "bert_config.json")


def test_jax_without_a_usable_device_is_a_clear_error(tmp_path):
    proc = _jax_task(tmp_path)
    assert proc.returncode == 1
    assert "--strategy auto: JAX has no usable device (JAX_PLATFORMS=cuda)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("backend", "strategy", "before", "after"),
    [
        ("jax", "auto", None, distribute.CUDNN_OUTSIDE_COMMAND_BUFFERS),
        ("jax", "gpu", "--xla_gpu_autotune_level=2", f"--xla_gpu_autotune_level=2 {distribute.CUDNN_OUTSIDE_COMMAND_BUFFERS}"),
        ("jax", "gpu", "--xla_gpu_enable_command_buffer=", "--xla_gpu_enable_command_buffer="),  # the user's choice
        ("jax", "cpu", None, None),
        ("jax", "tpu", None, None),
        ("jax", "auto on a TPU VM", None, None),
        ("tensorflow", "gpu", None, None),
    ],
)  # fmt: skip
def test_jax_on_an_accelerator_keeps_cudnn_calls_out_of_cuda_graphs(
    monkeypatch, backend, strategy, before, after
):
    if before is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", before)
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", ""))  # restored afterwards
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    if strategy == "auto on a TPU VM":
        monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
        strategy = "auto"
    if strategy == "cpu":  # it would also set jax_platforms in this process's JAX config
        monkeypatch.delitem(sys.modules, "jax", raising=False)  # put back afterwards
    distribute.prepare_environment(backend, 0, strategy)
    assert os.environ.get("XLA_FLAGS") == after


@pytest.mark.parametrize(
    ("flags", "accepted"),
    [(distribute.CUDNN_OUTSIDE_COMMAND_BUFFERS, True), ("--xla_gpu_enable_command_buffer=-CUDNNX", False)],
)
def test_the_installed_xla_accepts_the_command_buffer_flag(flags, accepted):
    # XLA aborts at start on a flag value it does not know; the misspelt one shows the check bites.
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    code = "import jax, jax.numpy as jnp; print(int(jax.jit(lambda x: x + 1)(jnp.int32(1))))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0 and proc.stdout.strip() == "2") is accepted, proc.stderr[-2000:]
