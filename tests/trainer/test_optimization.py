"""Learning-rate schedule, weight-decay exclusions and the LAMB update against a numpy reference.

Also a script for the JAX backend (``KERAS_BACKEND=jax python -m tests.trainer.test_optimization
OUT.npz``): runs the LAMB steps through ``apply`` and jitted ``stateless_apply``, and a
``mixed_bfloat16`` fit of the small model with ``--optimizer lamb``; writes the weights to OUT.npz
and a JSON report on its last line.
"""

from __future__ import annotations

import json
import sys
import types

import keras
import numpy as np
import pytest

from tests.trainer.batches import CONFIG, uneven_batch
from tests.trainer.scripts import run_module
from trainer.bert_model import BertPretrainingModel
from trainer.checkpoints import CheckpointManager
from trainer.config import TrainConfig
from trainer.optimization import Lamb, WarmupLinearDecay, create_optimizer, no_decay_variables


@pytest.mark.parametrize(
    ("step", "lr"),
    [(0, 0.0), (5, 0.5e-3), (10, 1e-3), (55, 0.5e-3), (100, 0.0), (150, 0.0)],
)
def test_warmup_then_linear_decay(step, lr):
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=100)
    assert float(keras.ops.convert_to_numpy(schedule(step))) == pytest.approx(lr, abs=1e-9)


def test_no_warmup_and_end_rate():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=0, total_steps=100, end_lr=1e-4)
    values = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 50, 100)]
    assert values == pytest.approx([1e-3, 5.5e-4, 1e-4])


def test_layer_norm_and_biases_are_not_decayed():
    model = BertPretrainingModel(CONFIG)
    excluded = {v.path for v in no_decay_variables(model)}
    names = model.named_variables()
    # Per layer: 6 biases + 4 LayerNorm vectors; embeddings LN 2; pooler, MLM (bias, LN 2,
    # output bias), NSP.
    assert len(excluded) == CONFIG.num_hidden_layers * 10 + 2 + 1 + 4 + 1
    for name, v in names.items():
        decayed = not name.endswith(("gamma", "beta", "bias"))
        assert (v.path not in excluded) == decayed, name


@pytest.mark.parametrize(("optimizer", "factor"), [("adamw", 1 - 0.1 * 0.5), ("lamb", 1 - 0.1)])
def test_zero_gradient_step_decays_only_matrices(optimizer, factor):
    # With a zero gradient, only weight decay moves a variable. AdamW: v -= lr * wd * v. LAMB:
    # r = wd * v, and the trust ratio ||v|| / ||r|| = 1 / wd rescales it: v -= lr * v.
    model = BertPretrainingModel(CONFIG)
    cfg = TrainConfig(
        optimizer=optimizer, learning_rate=0.1, warmup_steps=0, train_steps=10, weight_decay=0.5
    )
    opt = create_optimizer(cfg, model)
    before = model.get_named_weights()
    grads = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = model.get_named_weights()
    np.testing.assert_allclose(after["pooler/kernel"], before["pooler/kernel"] * factor, rtol=1e-6)
    np.testing.assert_array_equal(after["pooler/bias"], before["pooler/bias"])
    np.testing.assert_array_equal(after["embeddings/layer_norm/gamma"], before["embeddings/layer_norm/gamma"])


# LAMB: the update of You et al. 2019 with the BERT exclusions, against a float64 numpy reference.

LAMB_HPARAMS = {"learning_rate": 0.05, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-6, "weight_decay": 0.1}
NAMES = ("kernel", "bias", "zeros")
EXCLUDED = ("bias",)  # from weight decay and from layer adaptation, as LayerNorm and biases


def reference_lamb(initial: dict, grads: list[dict], *, learning_rate, beta_1, beta_2, epsilon, weight_decay):
    """The LAMB weights after ``len(grads)`` steps; ``EXCLUDED`` get no decay and ratio 1."""
    w = {k: np.asarray(v, np.float64).copy() for k, v in initial.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, step in enumerate(grads, start=1):
        for k in w:
            g = np.asarray(step[k], np.float64)
            m[k] = beta_1 * m[k] + (1 - beta_1) * g
            v[k] = beta_2 * v[k] + (1 - beta_2) * g * g
            m_hat = m[k] / (1 - beta_1**t)
            v_hat = v[k] / (1 - beta_2**t)
            r = m_hat / (np.sqrt(v_hat) + epsilon)
            ratio = 1.0
            if k not in EXCLUDED:
                r = r + weight_decay * w[k]
                w_norm, r_norm = np.linalg.norm(w[k]), np.linalg.norm(r)
                if w_norm > 0 and r_norm > 0:
                    ratio = w_norm / r_norm
            w[k] = w[k] - learning_rate * ratio * r
    return w


def lamb_case(steps: int = 4) -> tuple[dict, list[dict]]:
    """Initial weights (``zeros`` starts at 0: its first trust ratio falls back to 1) and gradients."""
    rng = np.random.default_rng(7)
    initial = {
        "kernel": rng.normal(0, 0.5, (4, 3)).astype(np.float32),
        "bias": rng.normal(0, 0.5, (3,)).astype(np.float32),
        "zeros": np.zeros((2, 3), np.float32),
    }
    grads = [
        {k: rng.normal(0, 1, w.shape).astype(np.float32) for k, w in initial.items()} for _ in range(steps)
    ]
    return initial, grads


def run_lamb(optimizer, initial: dict, grads: list[dict], *, stateless: bool = False) -> dict:
    """The weights after applying ``grads`` with ``optimizer`` (``EXCLUDED`` excluded), on this backend."""
    variables = [keras.Variable(initial[k], name=k) for k in NAMES]
    excluded = [v for k, v in zip(NAMES, variables, strict=True) if k in EXCLUDED]
    optimizer.exclude_from_weight_decay(var_list=excluded)
    if hasattr(optimizer, "exclude_from_layer_adaptation"):
        optimizer.exclude_from_layer_adaptation(var_list=excluded)
    if not stateless:
        for step in grads:
            optimizer.apply_gradients(zip([step[k] for k in NAMES], variables, strict=True))
        return {k: keras.ops.convert_to_numpy(v) for k, v in zip(NAMES, variables, strict=True)}
    import jax

    optimizer.build(variables)
    apply = jax.jit(optimizer.stateless_apply)
    values = [v.value for v in variables]
    slots = [v.value for v in optimizer.variables]
    for step in grads:
        values, slots = apply(slots, [jax.numpy.asarray(step[k]) for k in NAMES], values)
    return {k: np.asarray(v) for k, v in zip(NAMES, values, strict=True)}


def test_lamb_matches_the_reference():
    initial, grads = lamb_case()
    expected = reference_lamb(initial, grads, **LAMB_HPARAMS)
    got = run_lamb(Lamb(**LAMB_HPARAMS), initial, grads)
    for k in NAMES:
        assert got[k].dtype == np.float32
        assert np.max(np.abs(got[k] - initial[k])) > 0.05, k  # every variable moved
        np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-6, err_msg=k)


def test_keras_lamb_differs_from_the_reference():
    # Keras' Lamb decays outside the trust ratio and adapts every variable: the comparison of
    # test_lamb_matches_the_reference fails with it, for the decayed and the excluded variable.
    initial, grads = lamb_case()
    expected = reference_lamb(initial, grads, **LAMB_HPARAMS)
    got = run_lamb(keras.optimizers.Lamb(**LAMB_HPARAMS), initial, grads)
    for k in ("kernel", "bias"):
        assert np.max(np.abs(got[k] - expected[k])) > 1e-3, k
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-6)
    # Without decay the two agree on a decayed, adapted variable: the difference is the decay.
    no_decay = {**LAMB_HPARAMS, "weight_decay": 0.0}
    ours = run_lamb(Lamb(**no_decay), initial, grads)["kernel"]
    theirs = run_lamb(keras.optimizers.Lamb(**no_decay), initial, grads)["kernel"]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_lamb_serializes_and_create_optimizer_excludes_layer_norm_and_biases():
    model = BertPretrainingModel(CONFIG)
    opt = create_optimizer(TrainConfig(optimizer="lamb"), model)
    assert opt.name == "lamb" and opt.weight_decay == 0.01
    excluded = {id(v) for v in no_decay_variables(model)}
    for v in model.trainable_variables:
        assert opt._use_layer_adaptation(v) == (id(v) not in excluded), v.path
        assert opt._use_weight_decay(v) == (id(v) not in excluded), v.path
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is Lamb
    assert again.get_config() == opt.get_config()
    assert again.get_config()["epsilon"] == 1e-6


def test_lamb_state_survives_a_checkpoint(tmp_path):
    # 2 steps, checkpoint, restore into a fresh optimizer, 2 more: the weights of 4 steps.
    initial, grads = lamb_case()
    whole = run_lamb(Lamb(**LAMB_HPARAMS), initial, grads)

    def manager(variables, optimizer):
        model = types.SimpleNamespace(variables=variables, trainable_variables=variables)
        return CheckpointManager(str(tmp_path), model=model, optimizer=optimizer, keep=1)

    first = [keras.Variable(initial[k], name=k) for k in NAMES]
    opt = Lamb(**LAMB_HPARAMS)
    opt.exclude_from_weight_decay(var_list=first[1:2])
    opt.exclude_from_layer_adaptation(var_list=first[1:2])
    for step in grads[:2]:
        opt.apply_gradients(zip([step[k] for k in NAMES], first, strict=True))
    assert len(opt.variables) == 2 + 2 * len(NAMES)  # iterations, learning rate, m and v
    manager(first, opt).save(2)

    second = [keras.Variable(initial[k], name=k) for k in NAMES]
    resumed = Lamb(**LAMB_HPARAMS)
    resumed.exclude_from_weight_decay(var_list=second[1:2])
    resumed.exclude_from_layer_adaptation(var_list=second[1:2])
    resumed.build(second)
    assert manager(second, resumed).restore()["step"] == 2
    assert int(keras.ops.convert_to_numpy(resumed.iterations)) == 2
    for step in grads[2:]:
        resumed.apply_gradients(zip([step[k] for k in NAMES], second, strict=True))
    for k, v in zip(NAMES, second, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), whole[k], rtol=0, atol=1e-7, err_msg=k)


def fit_mixed_bfloat16_lamb() -> dict:
    """Two steps of the small model under ``mixed_bfloat16`` with ``--optimizer lamb``."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = BertPretrainingModel(CONFIG)
        before = model.get_named_weights()
        cfg = TrainConfig(optimizer="lamb", learning_rate=1e-2, warmup_steps=0, train_steps=10)
        model.compile(optimizer=create_optimizer(cfg, model))
        features, labels = uneven_batch()
        history = model.fit(features, labels, batch_size=8, epochs=2, verbose=0, shuffle=False)
        after = model.get_named_weights()
        return {
            "losses": [float(x) for x in history.history["loss"]],
            "variable_dtypes": sorted({str(v.dtype) for v in model.trainable_variables}),
            "slot_dtypes": sorted({str(v.dtype) for v in model.optimizer.variables[2:]}),
            "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "max_update": max(float(np.max(np.abs(after[k] - before[k]))) for k in after),
            "finite": all(bool(np.all(np.isfinite(w))) for w in after.values()),
        }
    finally:
        keras.mixed_precision.set_global_policy("float32")


def check_mixed_bfloat16_fit(result: dict) -> None:
    assert result["variable_dtypes"] == ["float32"] and result["slot_dtypes"] == ["float32"], result
    assert result["iterations"] == 2 and result["finite"], result
    assert result["max_update"] > 1e-3, result
    assert all(np.isfinite(result["losses"])), result


def test_lamb_trains_under_mixed_bfloat16():
    check_mixed_bfloat16_fit(fit_mixed_bfloat16_lamb())


def test_jax_backend_gives_the_same_lamb_update(tmp_path):
    out = tmp_path / "lamb.npz"
    result = run_module(
        "tests.trainer.test_optimization", str(out), backend="jax", env={"JAX_PLATFORMS": "cpu"}
    )
    assert result["backend"] == "jax"
    initial, grads = lamb_case()
    expected = reference_lamb(initial, grads, **LAMB_HPARAMS)
    got = np.load(out)
    for path in ("apply", "stateless"):
        for k in NAMES:
            np.testing.assert_allclose(
                got[f"{path}/{k}"], expected[k], rtol=0, atol=1e-6, err_msg=f"{path} {k}"
            )
    check_mixed_bfloat16_fit(result["fit"])


def _jax_main(out_path: str) -> None:
    assert keras.backend.backend() == "jax"
    initial, grads = lamb_case()
    arrays = {}
    for path, stateless in (("apply", False), ("stateless", True)):
        got = run_lamb(Lamb(**LAMB_HPARAMS), initial, grads, stateless=stateless)
        arrays.update({f"{path}/{k}": w for k, w in got.items()})
    np.savez(out_path, **arrays)
    print("RESULT " + json.dumps({"backend": keras.backend.backend(), "fit": fit_mixed_bfloat16_lamb()}))


if __name__ == "__main__":
    _jax_main(sys.argv[1])
