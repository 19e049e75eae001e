"""Gradient accumulation (``trainer.accumulation``): K micro-batches give the update of the batch."""

from __future__ import annotations

import pytest

from tests.trainer.scripts import run_module


def _run(backend: str) -> dict:
    return run_module("tests.trainer.accumulation_run", backend=backend, env={"TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_micro_batches_give_the_update_and_metrics_of_the_whole_batch(backend):
    result = _run(backend)
    assert result["backend"] == backend
    assert result["max_update"] > 1e-3  # two AdamW steps at lr 1e-3 moved the weights
    assert set(result["runs"]) == {"k2", "k4", "k2_replicas2"}
    for name, run in result["runs"].items():
        # Unequal masked positions per micro-batch: a per-micro-batch MLM mean would be off by
        # ~4e-3 here; the whole batch's denominator leaves float32 summation order only.
        assert run["max_diff"] < 1e-6, (name, run)
        for key, value in result["reference_logs"].items():
            assert run["logs"][key] == pytest.approx(value, abs=2e-6), (name, key)
    # SGD: the update is the mean gradient, so a gradient summed instead of averaged, or scaled
    # loss left scaled, would be off by a factor (4x here: a difference near 1, not 1e-7).
    for optimizer in ("sgd", "sgd_loss_scale"):
        assert result[optimizer]["max_update"] > 0.1, optimizer
        assert result[optimizer]["max_diff"] < 1e-6, (optimizer, result[optimizer])
    # Under mixed_bfloat16 the micro-batches stay within bf16's own rounding: closer to the
    # whole bf16 batch than that batch is to float32 (measured: 1.2-1.8e-3 against 1.5-2.3e-3,
    # for updates of 0.24-0.33).
    bf16 = result["bf16"]
    assert 0 < bf16["bf16_vs_float32"] < 0.05 * bf16["max_update"], bf16
    assert bf16["k4_vs_k1"] < 1.5 * bf16["bf16_vs_float32"], bf16
    dropout = result["dropout"]
    assert dropout["k2_vs_k1"] > 1e-4  # other masks, other update
    # Every dropout seed state advanced twice as far: each micro-batch drew its own masks.
    k1, k2 = dropout["seed_states_k1"], dropout["seed_states_k2"]
    assert len(k1) == len(k2) > 0
    for (seed1, count1), (seed2, count2) in zip(k1, k2, strict=True):
        assert seed1 == seed2 and count2 == 2 * count1 > 0
