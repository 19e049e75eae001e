"""``trainer.distribute``: which devices count as bfloat16-capable for ``--precision auto``."""

from __future__ import annotations

import pytest

from trainer import distribute


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
