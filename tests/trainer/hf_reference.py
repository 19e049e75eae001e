"""Test helper: copy named weights into a Hugging Face ``BertForPreTraining`` (torch).

The name map is written out here on purpose, independently of the converter, so that the
model-equivalence tests check the export contract of docs/export_format.md themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import BertConfig as HFBertConfig
from transformers import BertForPreTraining

from trainer.config import BertConfig


def hf_model(config: BertConfig) -> BertForPreTraining:
    hf_config = HFBertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
    )
    torch.manual_seed(0)
    return BertForPreTraining(hf_config).eval()


def _hf_to_named(config: BertConfig) -> dict[str, tuple[str, bool]]:
    """export name -> (HF state-dict key, transpose)."""
    m = {
        "embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
        "embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight", False),
        "embeddings/token_type_embeddings": ("bert.embeddings.token_type_embeddings.weight", False),
        "embeddings/layer_norm/gamma": ("bert.embeddings.LayerNorm.weight", False),
        "embeddings/layer_norm/beta": ("bert.embeddings.LayerNorm.bias", False),
        "pooler/kernel": ("bert.pooler.dense.weight", True),
        "pooler/bias": ("bert.pooler.dense.bias", False),
        "mlm/transform/kernel": ("cls.predictions.transform.dense.weight", True),
        "mlm/transform/bias": ("cls.predictions.transform.dense.bias", False),
        "mlm/transform/layer_norm/gamma": ("cls.predictions.transform.LayerNorm.weight", False),
        "mlm/transform/layer_norm/beta": ("cls.predictions.transform.LayerNorm.bias", False),
        "mlm/output_bias": ("cls.predictions.bias", False),
        "nsp/kernel": ("cls.seq_relationship.weight", True),
        "nsp/bias": ("cls.seq_relationship.bias", False),
    }
    for i in range(config.num_hidden_layers):
        ours, hf = f"encoder/layer_{i}", f"bert.encoder.layer.{i}"
        for part, key in (
            ("attention/query", "attention.self.query"),
            ("attention/key", "attention.self.key"),
            ("attention/value", "attention.self.value"),
            ("attention/output", "attention.output.dense"),
            ("intermediate", "intermediate.dense"),
            ("output", "output.dense"),
        ):
            m[f"{ours}/{part}/kernel"] = (f"{hf}.{key}.weight", True)
            m[f"{ours}/{part}/bias"] = (f"{hf}.{key}.bias", False)
        for part, key in (
            ("attention/layer_norm", "attention.output.LayerNorm"),
            ("output/layer_norm", "output.LayerNorm"),
        ):
            m[f"{ours}/{part}/gamma"] = (f"{hf}.{key}.weight", False)
            m[f"{ours}/{part}/beta"] = (f"{hf}.{key}.bias", False)
    return m


def named_weights_from_hf(model: BertForPreTraining, config: BertConfig) -> dict[str, np.ndarray]:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {}
    for name, (key, transpose) in _hf_to_named(config).items():
        value = state[key]
        out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def hf_outputs(model: BertForPreTraining, inputs: dict) -> dict[str, np.ndarray]:
    """MLM logits at ``masked_lm_positions`` [B, P, V] and NSP logits [B, 2]."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(inputs["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["input_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(inputs["segment_ids"], dtype=torch.long),
        )
    logits = out.prediction_logits.numpy()
    positions = inputs["masked_lm_positions"]
    gathered = np.take_along_axis(logits, positions[:, :, None].astype(np.int64), axis=1)
    return {"mlm_logits": gathered, "nsp_logits": out.seq_relationship_logits.numpy()}


def random_inputs(
    config: BertConfig, *, batch: int = 3, seq_len: int = 16, num_pred: int = 4, seed: int = 0
) -> dict:
    """Random ids with real padding (varying lengths) and ascending masked positions."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(batch, seq_len)).astype(np.int32)
    mask = np.zeros((batch, seq_len), np.int32)
    segments = np.zeros((batch, seq_len), np.int32)
    positions = np.zeros((batch, num_pred), np.int32)
    for b in range(batch):
        length = seq_len - 3 * b
        mask[b, :length] = 1
        ids[b, length:] = 0
        segments[b, length // 2 : length] = 1
        positions[b] = np.sort(rng.choice(np.arange(1, length), size=num_pred, replace=False))
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments, "masked_lm_positions": positions}
