"""``trainer.kernels``: option checks, the RngBitGenerator dropout, and (on the JAX backend, in a
subprocess) the cuDNN fused attention program and training with each dropout generator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.trainer.batches import CONFIG
from tests.trainer.scripts import run_module
from trainer import kernels
from trainer.bert_model import BertPretrainingModel


def test_options_name_the_flag_on_bad_values():
    with pytest.raises(ValueError, match=r"--attention_impl must be one of .*got 'flash'"):
        kernels.KernelOptions(attention="flash")
    with pytest.raises(ValueError, match=r"--dropout_rng must be one of .*got 'philox'"):
        kernels.KernelOptions(dropout_rng="philox")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            kernels.KernelOptions(attention="cudnn"),
            "--attention_impl cudnn needs KERAS_BACKEND=jax, not tensorflow",
        ),
        (
            kernels.KernelOptions(dropout_rng="rbg"),
            "--dropout_rng rbg needs KERAS_BACKEND=jax, not tensorflow",
        ),
    ],
)
def test_jax_only_choices_are_refused_on_tensorflow(options, message):
    with pytest.raises(ValueError, match=message):
        BertPretrainingModel(CONFIG, options)


def test_rbg_dropout_drops_the_rate_and_scales_the_rest():
    x = jnp.full((1000, 1000), 3.0, jnp.float32)
    seed = jnp.array([5, 9], jnp.uint32)
    y = np.asarray(kernels.rbg_dropout(x, 0.1, seed))
    kept = y != 0
    # 10^6 Bernoulli(0.9) draws: standard deviation of the kept share 3e-4.
    assert abs(kept.mean() - 0.9) < 2e-3
    np.testing.assert_array_equal(y[kept], np.float32(3.0) / np.float32(0.9))
    # Rows and columns are not correlated (each row's kept share near 0.9 too).
    assert np.abs(kept.mean(axis=1) - 0.9).max() < 0.06
    # Same seed, same mask; the next seed, another mask with the independent overlap 0.81.
    np.testing.assert_array_equal(np.asarray(kernels.rbg_dropout(x, 0.1, seed)), y)
    other = np.asarray(kernels.rbg_dropout(x, 0.1, seed + jnp.array([0, 1], jnp.uint32))) != 0
    assert abs((kept & other).mean() - 0.81) < 3e-3


def test_rbg_dropout_keeps_dtype_and_its_gradient_is_the_mask():
    x = jnp.linspace(-1.0, 1.0, 4096, dtype=jnp.bfloat16).reshape(64, 64)
    seed = jnp.array([1, 2], jnp.uint32)
    y = kernels.rbg_dropout(x, 0.25, seed)
    assert y.dtype == jnp.bfloat16
    grad = jax.grad(lambda v: jnp.sum(kernels.rbg_dropout(v, 0.25, seed).astype(jnp.float32)))(
        jnp.ones((64, 64), jnp.float32)
    )
    mask = np.asarray(kernels.rbg_dropout(jnp.ones((64, 64), jnp.float32), 0.25, seed)) != 0
    np.testing.assert_allclose(np.asarray(grad), np.where(mask, 1 / 0.75, 0.0), rtol=1e-6)


@pytest.fixture(scope="module")
def jax_result() -> dict:
    return run_module("tests.trainer.jax_kernels", backend="jax", env={"JAX_PLATFORMS": "cpu"})


def test_cudnn_program_has_fused_attention_with_dropout_and_no_probabilities(jax_result):
    cudnn, xla = jax_result["lower"]["cudnn"], jax_result["lower"]["xla"]
    # Two layers: one fused forward and one fused backward call each, dropout inside.
    assert (
        sorted(cudnn["calls"])
        == ["__cudnn$fmhaScaleBiasSoftmaxDropout"] * 2 + ["__cudnn$fmhaScaleBiasSoftmaxDropoutBackward"] * 2
    )
    seeds = cudnn["static_seeds"]
    assert len(set(seeds)) == 2 and all(0 < s < 2**31 for s in seeds)  # one seed per layer
    # Each layer's forward and backward share its seed (the backward regenerates the mask).
    assert sorted((s["seed"], s["dropout_rate"]) for s in cudnn["settings"]) == sorted(
        [(s, 0.1) for s in seeds] * 2
    )
    assert cudnn["probability_shaped_values"] == 0
    # The XLA program keeps [B, N, L, L] scores, probabilities and masks, and calls no cuDNN.
    assert xla["calls"] == [] and xla["probability_shaped_values"] > 10


def test_cudnn_refused_without_cudnn_and_auto_falls_back(jax_result):
    refuse = jax_result["refuse"]
    # Forced cudnn on a jaxlib without cuDNN: JAX's own refusal propagates.
    assert refuse["cudnn"] == {"error": "RuntimeError: cuDNN is not detected."}
    # auto on a CPU: XLA, for a logged reason, without trying cuDNN; resolve() agrees.
    assert refuse["auto"] == {"ok": True}
    assert refuse["auto_log"] == ["attention: XLA (JAX runs on cpu, not a GPU)"]
    assert refuse["resolve_cpu"] == "xla"
    # auto where the checks pass but cuDNN fails: the trace-time attempt falls back (warned) ...
    assert refuse["auto_forced_try"] == {"ok": True}
    assert refuse["auto_forced_try_log"] == [
        "cuDNN fused attention not available (cuDNN is not detected.); attention runs in XLA"
    ]
    # ... and so does the compile probe of trainer.task.
    assert refuse["resolve_forced_try"] == "xla"
    assert refuse["resolve_forced_try_log"][0].startswith(
        "cuDNN fused attention did not compile or run (RuntimeError: cuDNN is not detected."
    )
    assert refuse["resolve_forced_try_log"][1].startswith(
        "attention: XLA (RuntimeError: cuDNN is not detected."
    )
    assert refuse["cudnn_float32"] == (
        "--attention_impl cudnn needs --precision mixed_bfloat16 or mixed_float16; the activations are float32"
    )


def test_each_dropout_generator_trains_reproducibly(jax_result):
    train = jax_result["train"]
    for rng in ("keras", "rbg"):
        r = train[rng]
        assert r["rerun_max_diff"] == 0.0 and r["losses"] == r["rerun_losses"], rng
        assert all(np.isfinite(r["losses"])) and r["losses"][1] < r["losses"][0], rng
    # Other masks, so other updates: the rbg masks are really used.
    assert train["keras_vs_rbg_max_diff"] > 1e-4
