"""The trainer's export (docs/export_format.md): ``bert_config.json``, ``model.safetensors``,
``training_state.json``, local or ``gs://``.

Reading needs neither TensorFlow nor Keras (``load_export``); ``build_model_from_export``
imports Keras to rebuild the model.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from trainer import fileio
from trainer.config import BertConfig

CONFIG_NAME = "bert_config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "training_state.json"


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def export_weights(
    weights: dict[str, np.ndarray], config: BertConfig, export_dir: str, training_state: dict
) -> None:
    """Writes named float32 weights, the config and the training state to ``export_dir``.

    Each file is written atomically; ``training_state.json`` comes last, so its presence
    means the export is complete.
    """
    fileio.makedirs(export_dir)
    tensors = {name: np.array(value, dtype=np.float32, order="C") for name, value in weights.items()}
    fileio.write_bytes_atomic(
        fileio.join(export_dir, WEIGHTS_NAME), save_safetensors(tensors, metadata={"format": "np"})
    )
    config.to_json_file(fileio.join(export_dir, CONFIG_NAME))
    fileio.write_text_atomic(
        fileio.join(export_dir, STATE_NAME),
        json.dumps(training_state, indent=2, sort_keys=True, default=_json_default) + "\n",
    )


def export_model(model, config: BertConfig, export_dir: str, training_state: dict) -> None:
    """Exports a ``BertPretrainingModel`` (see ``export_weights``)."""
    if model.config != config:
        raise ValueError(f"the model's config {model.config} differs from the config to export {config}")
    export_weights(model.get_named_weights(), config, export_dir, training_state)


def load_export(export_dir: str) -> tuple[BertConfig, dict[str, np.ndarray], dict]:
    """Reads an export: ``(BertConfig, named weights, training state)``.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: for a malformed config or state file.
    """
    paths = {name: fileio.join(export_dir, name) for name in (CONFIG_NAME, WEIGHTS_NAME, STATE_NAME)}
    for path in paths.values():
        if not fileio.exists(path):
            raise FileNotFoundError(f"{path} not found: {export_dir} is not a complete trainer export")
    config = BertConfig.from_json_file(paths[CONFIG_NAME])
    weights = load_safetensors(fileio.read_bytes(paths[WEIGHTS_NAME]))
    try:
        state = json.loads(fileio.read_text(paths[STATE_NAME]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{paths[STATE_NAME]}: not valid JSON: {e}") from e
    return config, weights, state


def build_model_from_export(export_dir: str):
    """Rebuilds a ``BertPretrainingModel`` with the exported config and weights."""
    from trainer.bert_model import BertPretrainingModel

    config, weights, _ = load_export(export_dir)
    model = BertPretrainingModel(config)
    model.set_named_weights(weights)
    return model
