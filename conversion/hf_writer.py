"""The model files of the Hugging Face folder: ``config.json`` and ``model.safetensors``.

Pure numpy and safetensors: no torch is needed to convert (only to ``--verify``). The weight
names come from ``trainer.hf_weights`` (the one mapping); the file holds what
``BertForPreTraining.save_pretrained`` writes: every key except the tied decoder, with the
``{"format": "pt"}`` metadata that transformers requires.
"""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save as save_safetensors

from trainer import hf_weights

CONFIG_JSON = "config.json"
WEIGHTS_FILE = "model.safetensors"


def model_files(weights: dict[str, np.ndarray], config, *, pad_token_id: int) -> dict[str, bytes]:
    """``config.json`` and ``model.safetensors`` for ``BertForPreTraining``, by name.

    Args:
        weights: export name -> array (docs/export_format.md).
        config: the ``trainer.config.BertConfig`` the weights were trained with.
        pad_token_id: id of ``[PAD]`` in the vocabulary.

    Raises:
        ValueError: listing missing, unexpected and wrongly shaped weights (nothing is built).
    """
    state = hf_weights.native_to_hf(weights, config)
    tensors = {k: v for k, v in sorted(state.items()) if k not in hf_weights.TIED_KEYS}
    hf_config = hf_weights.hf_config_from_bert_config(config, pad_token_id=pad_token_id)
    return {
        CONFIG_JSON: (json.dumps(hf_config, indent=2, sort_keys=True) + "\n").encode("utf-8"),
        WEIGHTS_FILE: save_safetensors(tensors, metadata={"format": "pt"}),
    }
