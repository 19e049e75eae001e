"""Training checkpoints: every model and optimizer variable, local or ``gs://``, last K kept.

A checkpoint at step S is two files in ``MODEL_DIR/checkpoints/``:
``ckpt-S.safetensors`` (the variables, in the model's and the optimizer's variable order)
and ``ckpt-S.json`` (step, variable paths and shapes, and the trainer's state). The JSON
file is written last, after the tensors are complete, so a checkpoint counts only when its
JSON exists: a job killed while writing leaves the previous checkpoint as the latest.
Backend-neutral: a checkpoint written on TensorFlow restores on JAX and back.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from trainer import fileio
from trainer.variables import to_numpy

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d+)\.json$")


def _describe(variables) -> list[dict]:
    return [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)} for v in variables]


class CheckpointManager:
    """Saves and restores ``model.variables`` and ``optimizer.variables``.

    Args:
        directory: where checkpoints live (created on the first save).
        model: the Keras model (all of its variables are saved, dropout seeds included).
        optimizer: a built optimizer (its step counter, moments and loss scale are saved).
        keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str, *, model, optimizer, keep: int):
        self.directory = directory
        self.model = model
        self.optimizer = optimizer
        self.keep = keep

    def _paths(self, step: int) -> tuple[str, str]:
        base = fileio.join(self.directory, f"ckpt-{step:09d}")
        return base + ".safetensors", base + ".json"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending."""
        found = []
        for name in fileio.listdir(self.directory):
            match = _NAME.match(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def non_finite_weights(self) -> list[str]:
        """Paths of the model variables holding a NaN or an infinity."""
        bad = []
        for v in self.model.trainable_variables:
            if not np.all(np.isfinite(to_numpy(v))):
                bad.append(v.path)
        return bad

    def save(self, step: int, state: dict | None = None) -> str:
        """Writes the checkpoint of ``step`` and deletes those beyond the last ``keep``."""
        fileio.makedirs(self.directory)
        tensors = {f"model/{i}": to_numpy(v) for i, v in enumerate(self.model.variables)}
        tensors.update({f"optimizer/{i}": to_numpy(v) for i, v in enumerate(self.optimizer.variables)})
        tensor_path, json_path = self._paths(step)
        fileio.write_bytes_atomic(
            tensor_path, save_safetensors({k: np.array(t, order="C") for k, t in tensors.items()})
        )
        meta = {
            "step": step,
            "state": state or {},
            "model_variables": _describe(self.model.variables),
            "optimizer_variables": _describe(self.optimizer.variables),
        }
        fileio.write_text_atomic(json_path, json.dumps(meta, indent=1) + "\n")
        for old in self.steps()[: -self.keep]:
            for path in reversed(self._paths(old)):  # JSON first: never a JSON without tensors
                fileio.remove(path)
        return json_path

    def restore(self, step: int | None = None) -> dict | None:
        """Restores the checkpoint of ``step`` (default: the latest); returns its metadata.

        Returns None when there is no checkpoint.

        Raises:
            ValueError: the checkpoint does not fit the model or optimizer (different size,
                optimizer or precision), naming the first difference.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                return None
        tensor_path, json_path = self._paths(step)
        meta = json.loads(fileio.read_text(json_path))
        tensors = load_safetensors(fileio.read_bytes(tensor_path))
        for kind, variables in (("model", self.model.variables), ("optimizer", self.optimizer.variables)):
            saved = meta[f"{kind}_variables"]
            if len(saved) != len(variables):
                raise ValueError(
                    f"{json_path}: {len(saved)} {kind} variables saved but {len(variables)} now "
                    "(was it written with another model size, optimizer or precision?)"
                )
            for i, (entry, variable) in enumerate(zip(saved, variables, strict=True)):
                if tuple(entry["shape"]) != tuple(variable.shape):
                    raise ValueError(
                        f"{json_path}: {kind} variable {i} ({entry['path']}) has shape {tuple(entry['shape'])} "
                        f"in the checkpoint but {tuple(variable.shape)} ({variable.path}) now"
                    )
        for kind, variables in (("model", self.model.variables), ("optimizer", self.optimizer.variables)):
            for i, variable in enumerate(variables):
                value = tensors.get(f"{kind}/{i}")
                if value is None or value.shape != tuple(variable.shape):
                    raise ValueError(f"{tensor_path}: tensor {kind}/{i} is missing or has the wrong shape")
                variable.assign(value.astype(variable.dtype))
        return meta
