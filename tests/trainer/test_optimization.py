"""Learning-rate schedule and weight-decay exclusions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.trainer.batches import CONFIG
from trainer.bert_model import BertPretrainingModel
from trainer.config import TrainConfig
from trainer.optimization import WarmupLinearDecay, create_optimizer, no_decay_variables


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


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_zero_gradient_step_decays_only_matrices(optimizer):
    # With a zero gradient, only weight decay moves a variable: v -= lr * wd * v.
    model = BertPretrainingModel(CONFIG)
    cfg = TrainConfig(
        optimizer=optimizer, learning_rate=0.1, warmup_steps=0, train_steps=10, weight_decay=0.5
    )
    opt = create_optimizer(cfg, model)
    before = model.get_named_weights()
    grads = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = model.get_named_weights()
    np.testing.assert_allclose(after["pooler/kernel"], before["pooler/kernel"] * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(after["pooler/bias"], before["pooler/bias"])
    np.testing.assert_array_equal(after["embeddings/layer_norm/gamma"], before["embeddings/layer_norm/gamma"])
