"""``--pallas_kernels``: the trainer with its Pallas kernels (``trainer.pallas``) trains as its XLA
path does, and a run the kernels cannot serve is refused before any work, with every reason.

On CPU Pallas interprets the kernels; ``tests/trainer/test_gpu_compile.py`` checks each kernel
against the XLA path element by element, and lowers them for an H100.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import KernelOptions, pallas_kinds

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--synthetic_data", "--model_size", "tiny", "--max_position_embeddings", "64", "--vocab_size", "97",
    "--max_seq_length", "32", "--max_predictions_per_seq", "5", "--warmup_steps", "0",
]  # fmt: skip


def _task(*args: str, backend: str = "jax") -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "trainer.task", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _losses(log: str) -> dict[str, list[float]]:
    """Each progress line's and evaluation line's loss, in order."""
    return {
        "train": [float(x) for x in re.findall(r"INFO step \d+ \| loss ([0-9.]+)", log)],
        "eval": [float(x) for x in re.findall(r"eval at step \d+ \| loss ([0-9.]+)", log)],
    }


def test_the_flag_names_kinds_in_a_fixed_order_and_refuses_others():
    assert pallas_kinds("none") == pallas_kinds("") == ()
    assert pallas_kinds("all") == ("norm", "ffn", "attention")
    assert pallas_kinds("attention, norm") == ("norm", "attention")
    with pytest.raises(ValueError, match=r"--pallas_kernels 'norm,flash': 'flash' not among"):
        pallas_kinds("norm,flash")
    with pytest.raises(ValueError, match=r"'auto' not among .* \(auto, none and all stand alone\)"):
        pallas_kinds("auto,norm")
    with pytest.raises(ValueError, match="--pallas_kernels must name some of"):
        KernelOptions(pallas=("layernorm",))


def test_auto_takes_norm_and_attention_on_one_hopper_gpu_where_they_fit():
    # --pallas_kernels auto (trainer.task's default): the kinds measured faster on an H100, on
    # one GPU of compute capability 9.x, each where it fits the run; none anywhere else.
    from trainer import pallas
    from trainer.config import BertConfig

    base = BertConfig.from_preset("base")
    run = dict(config=base, batch_size=256, seq_len=128, dtype="bfloat16", backend="jax")
    hopper = dict(run, platform="gpu", capability="9.0")
    options = KernelOptions()
    assert pallas.automatic(options, **hopper) == ("norm", "attention")
    assert pallas.automatic(options, **dict(hopper, dtype="float16")) == ("norm", "attention")
    # attention only up to 128 tokens (BERT's second phase at 512 keeps norm)
    assert pallas.automatic(options, **dict(hopper, seq_len=512)) == ("norm",)
    # attention named by --attention_impl stays there
    for attention in ("xla", "cudnn"):
        assert pallas.automatic(KernelOptions(attention=attention), **hopper) == ("norm",)
    for kinds, changed in (
        ((), dict(capability="8.0")),  # an A100: not measured
        ((), dict(capability="10.0")),  # a B200: not measured
        ((), dict(platform="cpu", capability=None)),
        ((), dict(platform="tpu", capability=None)),
        ((), dict(devices=2)),
        ((), dict(dtype="float32")),
        ((), dict(backend="tensorflow")),
        ((), dict(batch_size=3, seq_len=80)),  # 240 rows and an 80-token sequence fit neither
    ):
        assert pallas.automatic(options, **dict(hopper, **changed)) == kinds, changed
    # masks other than hash: both kinds drop, so neither; without dropout both still fit
    assert pallas.automatic(KernelOptions(dropout_rng="rbg"), **hopper) == ()
    no_dropout = dataclasses.replace(base, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert pallas.automatic(KernelOptions(dropout_rng="rbg"), **dict(hopper, config=no_dropout)) == (
        "norm",
        "attention",
    )


def test_the_model_with_every_kernel_has_the_xla_paths_loss_and_gradients():
    # The whole tiny model (embeddings, 2 layers, MLM and NSP heads) in mixed_bfloat16 with the
    # kernels and without, and in float32 without, on the same weights, batch and hash-dropout
    # seeds: each of the 46 gradients as close to the float32 model's as the XLA path's (within
    # 1.25 times its error plus 1e-3; a key-projection gradient 1% off fails this). The key
    # bias is left out: its exact gradient is 0 (softmax ignores a shift shared by all keys).
    from tests.trainer.scripts import run_module

    result = run_module("tests.trainer.pallas_model_run", backend="jax", env={"JAX_PLATFORMS": "cpu"})
    assert result["traced"] == "norm 4, ffn 2, attention 2"  # every layer took every kernel once
    assert result["variables"] == 46
    loss = result["losses"]
    assert abs(loss["pallas"] - loss["xla"]) < 1e-4 * loss["xla"], loss
    checked = {n: e for n, e in result["against_float32"].items() if not n.endswith("key/bias")}
    assert len(checked) == 44
    for name, (xla, fused) in checked.items():
        assert fused <= 1.25 * xla + 1e-3 and fused < 0.02, (name, xla, fused)


def test_training_with_every_kernel_follows_the_xla_path(tmp_path):
    # The same seed, batches and dropout masks (hash) with the kernels and without: the kernels
    # compute the XLA path's function with its roundings, so the losses agree to a few bf16
    # roundings (the sums' order differs) through four updates and an evaluation.
    common = [*TINY, "--batch_size", "8", "--train_steps", "4", "--log_every", "1", "--checkpoint_every", "4",
              "--eval_every", "4", "--eval_steps", "2", "--precision", "mixed_bfloat16"]  # fmt: skip
    runs = {}
    for kinds in ("auto", "all"):  # auto, the default, takes none on the CPU
        flags = ["--pallas_kernels", kinds] if kinds != "auto" else []
        proc = _task(*common, "--model_dir", str(tmp_path / kinds), *flags)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[kinds] = proc.stdout + proc.stderr
    log = runs["all"]
    assert "Pallas kernels: norm, ffn, attention" in log
    assert "attention: Pallas kernels (--pallas_kernels attention)" in log
    assert "runs in XLA" not in log  # no layer fell back
    # 2 layers: a training step traces each layer once (2 sublayers each for norm), evaluation
    # again; the counts are traces, not steps.
    traced = re.search(r"Pallas kernels traced into the steps: norm (\d+), ffn (\d+), attention (\d+)", log)
    assert traced and int(traced[1]) >= 4 and int(traced[2]) >= 2 and int(traced[3]) >= 2, log[-3000:]
    assert int(traced[1]) == 2 * int(traced[2])
    xla, fused = _losses(runs["auto"]), _losses(log)
    assert len(xla["train"]) == len(fused["train"]) == 4 and len(xla["eval"]) == len(fused["eval"]) >= 1
    for want, got in zip(xla["train"] + xla["eval"], fused["train"] + fused["eval"], strict=True):
        assert abs(got - want) <= 2e-3 * want, (xla, fused)
    assert "Pallas kernels: none (--pallas_kernels auto: JAX runs on cpu)" in runs["auto"]
    assert "Pallas kernels traced" not in runs["auto"] and "interprets" not in runs["auto"]


def test_a_run_the_kernels_cannot_serve_is_refused_with_every_reason(tmp_path):
    model_dir = tmp_path / "m"
    # float32 activations, Keras' dropout masks, a sequence of 80 and 3 x 80 rows.
    proc = _task(
        *TINY, "--max_seq_length", "80", "--max_position_embeddings", "128", "--batch_size", "3",
        "--train_steps", "2", "--precision", "float32", "--dropout_rng", "keras", "--pallas_kernels", "all",
        "--model_dir", str(model_dir),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    error = next(line for line in proc.stdout.splitlines() if "ERROR" in line)
    assert "--pallas_kernels norm,ffn,attention: " in error
    for reason in (
        "activations are float32; the kernels need --precision mixed_bfloat16 or mixed_float16",
        "--dropout_rng keras; the kernels draw the masks of --dropout_rng hash",
        "norm: batch x sequence length = 240 rows, not a multiple of 32",
        "ffn: 240 rows (batch x sequence length), intermediate size 512 and hidden size 128 must be "
        "multiples of 128, 128 and 64",
        "attention: sequence length 80 and head size 64 must be powers of two",
    ):
        assert reason in error, (reason, error)
    assert "leaves attention" not in error  # norm and ffn are refused too: no hint at them
    assert not model_dir.exists()  # refused before the model directory is made
    bf16 = [*TINY, "--batch_size", "8", "--train_steps", "2", "--precision", "mixed_bfloat16"]
    for flags, said in (
        # the tanh GELU is not the kernels' (ffn alone named; Keras' masks are no reason then:
        # the ffn kernels drop nothing)
        (["--hidden_act", "gelu_new", "--dropout_rng", "keras", "--pallas_kernels", "ffn"],
         "--pallas_kernels ffn: ffn: the kernels compute the exact GELU (gelu), not gelu_new"),
        # two kernels for attention
        (["--attention_impl", "cudnn", "--pallas_kernels", "attention"],
         "--pallas_kernels attention: --attention_impl cudnn names another kernel for attention; keep one"),
        # attention alone refused (a sequence of 256): the other kinds are named as still fitting
        (["--max_seq_length", "256", "--max_position_embeddings", "256", "--pallas_kernels", "all"],
         "--pallas_kernels norm,ffn,attention: attention: sequence length 256 must be 16 to 128 and a multiple "
         "of 128 queries (--pallas_kernels norm,ffn leaves attention to XLA or cuDNN)"),
        # a batch the accumulation steps do not divide: that error first, not the kernels' rows
        (["--gradient_accumulation_steps", "3", "--pallas_kernels", "all"],
         "batch_size 8 is not divisible by gradient_accumulation_steps 3"),
    ):  # fmt: skip
        proc = _task(*bf16, *flags, "--model_dir", str(model_dir))
        error = [line for line in proc.stdout.splitlines() if "ERROR" in line]
        assert proc.returncode == 1 and len(error) == 1 and error[0].endswith(said), (
            said,
            proc.stdout[-2000:],
        )
        assert not model_dir.exists()
    # TensorFlow has no Pallas.
    proc = _task(*TINY, "--batch_size", "8", "--train_steps", "2", "--pallas_kernels", "norm",
                 "--model_dir", str(model_dir), backend="tensorflow")  # fmt: skip
    assert (
        proc.returncode == 1
        and "--pallas_kernels norm needs KERAS_BACKEND=jax, not tensorflow" in proc.stdout
    )
    # A kind the flag does not know: argparse's error, exit 2.
    proc = _task(*TINY, "--pallas_kernels", "norm,flash", "--model_dir", str(model_dir))
    assert proc.returncode == 2 and "'flash' not among" in proc.stderr
    assert not model_dir.exists()
