"""Run as ``python -m tests.trainer.no_tensorflow ARGS...``: ``trainer.task`` with TensorFlow made
unimportable first, as on a machine with JAX alone. Exits with ``trainer.task``'s code."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
    from trainer import task

    sys.exit(task.main(sys.argv[1:]))
