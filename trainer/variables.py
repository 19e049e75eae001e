"""Reading Keras variables back to the host as numpy, on any backend."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def to_numpy(variable) -> np.ndarray:
    """The variable's value as a numpy array (this host's copy on multi-host JAX)."""
    value = variable.value
    if keras.backend.backend() == "jax" and not getattr(value, "is_fully_addressable", True):
        # Multi-host JAX: the variables are replicated, so this host's shard is the whole array.
        value = value.addressable_data(0)
    return np.asarray(ops.convert_to_numpy(value))


def is_chief() -> bool:
    """Whether this process writes checkpoints, exports and summaries (one writer per job)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    return True
