"""FLOPs per pretraining step and MFU: a hand count, and torch's own count of a real model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from trainer import flops
from trainer.flops import ModelDims

# H=4, N=1, I=8, V=10; L=3, P=2.
TINY = ModelDims(hidden_size=4, num_hidden_layers=1, intermediate_size=8, vocab_size=10)


def test_forward_flops_match_a_hand_count():
    parts = flops.forward_flops_per_example(TINY, seq_length=3, max_predictions=2)
    # Q, K, V, output: 4 x [3,4]@[4,4] = 4 * 2*3*4*4; feed-forward: [3,4]@[4,8] + [3,8]@[8,4].
    assert parts["encoder"] == 4 * 96 + 192 + 192 == 768
    # scores [3,4]@[4,3] and values [3,3]@[3,4], summed over heads.
    assert parts["attention"] == 72 + 72 == 144
    # transform [2,4]@[4,4], tied decoder [2,4]@[4,10].
    assert parts["mlm_head"] == 64 + 160 == 224
    # pooler [1,4]@[4,4], classifier [1,4]@[4,2].
    assert parts["nsp_head"] == 32 + 16 == 48
    assert parts["total"] == 1184


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("batch_2", dict(batch_size=2, seq_length=3, max_predictions=2), 3 * 2 * 1184),
        ("no_masked_positions", dict(batch_size=1, seq_length=3, max_predictions=0), 3 * (1184 - 224)),
        # Scoring all 3 positions: transform 2*3*4*4 + decoder 2*3*4*10 = 336 instead of 224.
        (
            "all_positions",
            dict(batch_size=1, seq_length=3, max_predictions=2, mlm_positions=3),
            3 * (1184 + 112),
        ),
    ],
)
def test_train_step_flops(name, kwargs, expected):
    assert flops.train_step_flops(TINY, **kwargs) == expected, name


def test_no_nsp_head():
    dims = ModelDims(hidden_size=4, num_hidden_layers=1, intermediate_size=8, vocab_size=10, use_nsp=False)
    assert flops.forward_flops_per_example(dims, seq_length=3, max_predictions=2)["total"] == 1184 - 48


def test_bert_base_figure():
    # BERT-base at seq 128, 20 predictions, vocab 30522: 7.0e10 FLOPs per example and step.
    base = ModelDims(hidden_size=768, num_hidden_layers=12, intermediate_size=3072, vocab_size=30522)
    per_example = flops.train_step_flops(base, batch_size=1, seq_length=128, max_predictions=20)
    assert per_example == 3 * (
        12 * (8 * 128 * 768**2 + 4 * 128 * 768 * 3072 + 4 * 128**2 * 768)
        + 2 * 20 * 768 * 768
        + 2 * 20 * 768 * 30522
        + 2 * 768 * 768
        + 4 * 768
    )
    assert math.isclose(per_example, 6.993e10, rel_tol=1e-3)
    # The encoder's projections and feed-forward blocks are the usual 6 * (weights) * (tokens).
    encoder_weights = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    parts = flops.forward_flops_per_example(base, seq_length=128, max_predictions=20)
    assert 3 * parts["encoder"] == 6 * encoder_weights * 128


def test_mfu_and_peaks():
    assert flops.peak_flops("H100") == 989e12
    assert flops.peak_flops("h200") == flops.peak_flops("h100")
    # 494.5 TFLOP per step in one second on one H100 is 50%.
    assert math.isclose(
        flops.mfu(flops_per_step=494.5e12, step_time_s=1.0, peak_flops_per_device=989e12), 0.5
    )
    # Two devices halve it.
    assert math.isclose(
        flops.mfu(flops_per_step=494.5e12, step_time_s=1.0, peak_flops_per_device=989e12, num_devices=2), 0.25
    )
    with pytest.raises(ValueError, match="unknown device 'tpu-v9'"):
        flops.peak_flops("tpu-v9")
    with pytest.raises(ValueError, match="step_time_s"):
        flops.mfu(flops_per_step=1.0, step_time_s=0.0, peak_flops_per_device=1.0)


@pytest.mark.parametrize(
    ("reported", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("TPU v4", "tpu-v4"),
        ("TPU v5 lite", "tpu-v5e"),
        ("TPU v5", "tpu-v5p"),
        ("TPU v5p", "tpu-v5p"),
        ("TPU v6 lite", "tpu-v6e"),
        ("TPU v4 lite", None),  # v4i: a peak of its own
        ("cpu", None),
    ],
)
def test_guess_device_kind(reported, key):
    assert flops.guess_device_kind(reported) == key


@pytest.mark.parametrize(
    ("reported", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("TPU v3", 61.5e12),  # a chip's two TensorCores show as two devices
        ("TPU v4", 275e12),  # one device a chip
        ("cpu", None),
        ("", None),
    ],
)
def test_a_devices_peak_as_the_framework_counts_devices(reported, peak):
    assert flops.device_peak_flops(reported) == peak


def test_config_dims_validated():
    with pytest.raises(ValueError, match="hidden_size"):
        ModelDims(hidden_size=0, num_hidden_layers=1, intermediate_size=8, vocab_size=10)


def test_matches_torch_flop_counter_on_hugging_face_bert():
    """torch counts every matrix product of a real BertForPreTraining step, forward and backward.

    Hugging Face scores the MLM head on every position, so it is compared with ``mlm_positions=L``.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    hf_config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    model = transformers.BertForPreTraining(hf_config)
    batch, seq = 3, 8
    input_ids = torch.randint(5, 50, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        (out.prediction_logits.float().sum() + out.seq_relationship_logits.sum()).backward()
    dims = ModelDims(hidden_size=16, num_hidden_layers=2, intermediate_size=40, vocab_size=50)
    expected = flops.train_step_flops(dims, batch_size=batch, seq_length=seq, max_predictions=seq)
    assert counter.get_total_flops() == expected


def test_gpu_benchmark_keras_path_runs_without_tensorflow(tmp_path, repo_root):
    """The GPU benchmark's Keras side (model, optimizer, FLOPs) on JAX with TensorFlow blocked.

    The GPU machines have no TensorFlow; this runs the same worker on CPU at a toy size.
    """
    pytest.importorskip("jax")
    out = tmp_path / "gpu_bench.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu_bench",
        "--device",
        "cpu",
        "--size",
        "tiny",
        "--vocab_size",
        "64",
        "--batch_size",
        "2",
        "--seq_length",
        "16",
        "--max_predictions",
        "3",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--peak_tflops",
        "1",
        "--runs",
        "keras_jax",
        "--optional_runs",
        "",
        "--profile_steps",
        "2",
        "--hlo_dump_dir",
        str(tmp_path / "hlo"),
        "--out",
        str(out),
    ]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = json.loads(out.read_text())
    (result,) = written["results"]
    assert result["tensorflow_imported"] is False
    # The attention probe compiled a layer's training step per choice: on CPU, XLA attention.
    probe = written["attention_probe"]
    for choice in ("auto_attention_dropout_0.1", "xla_attention_dropout_0.1", "auto_attention_dropout_0"):
        assert probe[choice] == {"cudnn_custom_calls": [], "cudnn_fused_attention": False}, probe
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    dims = ModelDims(hidden_size=128, num_hidden_layers=2, intermediate_size=512, vocab_size=64)
    assert result["model_flops_per_step"] == flops.train_step_flops(
        dims, batch_size=2, seq_length=16, max_predictions=3
    )
    # The profile of 2 more steps: on CPU the XLA host threads stand in for a device.
    profile = result["profile"]
    assert profile["steps"] == 2 and profile["source"].startswith("host XLA threads")
    assert profile["kernel_ms_per_step"] > 0 and profile["top"] and profile["trace"] is None
    assert "ms of kernels per step" in proc.stdout
    # The train step's optimised HLO, where the fusions the profile names are defined.
    (hlo,) = (tmp_path / "hlo" / "keras_jax_b2").glob("*jit_train_step*after_optimizations.txt")
    names = {t["name"] for t in profile["top"]}
    assert any(f"{name} = " in hlo.read_text() for name in names), sorted(names)[:5]
