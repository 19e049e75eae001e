"""Time and peak memory of converting a BERT-base-sized export, against writing it through torch.

Builds a random export of the requested preset (numpy weights, the trainer's own writer) and a
vocabulary of the same size under ``--work_dir``, then runs each in its own process:

- ``baseline``: the export read with ``trainer.export.load_export``, mapped with
  ``trainer.hf_weights.native_to_hf``, loaded into a transformers ``BertForPreTraining`` and
  written with ``save_pretrained`` (the way a converter built on torch would write the folder);
- ``convert``: ``python -m conversion.convert`` (numpy and safetensors only);
- ``convert --verify``: the same with the Keras and torch models compared on generated examples.

Wall time and peak RSS come from ``/usr/bin/time``. Run it under the benchmark lock::

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.conversion_speed --model_size base --vocab_size 32000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BASELINE = """
import sys, torch, transformers
from trainer import export, hf_weights
config, weights, _ = export.load_export(sys.argv[1])
state = hf_weights.native_to_hf(weights, config)
hf_config = transformers.BertConfig(**{k: v for k, v in hf_weights.hf_config_from_bert_config(config).items()
                                       if k not in ("architectures", "model_type")})
model = transformers.BertForPreTraining(hf_config)
model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
model.save_pretrained(sys.argv[2])
"""


def _prepare(work_dir: str, model_size: str, vocab_size: int) -> tuple[str, str]:
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    from trainer import hf_weights
    from trainer.config import BertConfig
    from trainer.export import export_weights

    config = BertConfig.from_preset(model_size, vocab_size=vocab_size)
    rng = np.random.default_rng(0)
    weights = {
        name: rng.normal(0.0, 0.02, size=shape).astype(np.float32)
        for name, shape in hf_weights.native_shapes(config).items()
    }
    model_dir = os.path.join(work_dir, "model")
    export_weights(weights, config, os.path.join(model_dir, "export"), {"step": 0})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab_size - 5)]
    vocab_dir = os.path.join(work_dir, "vocab")
    os.makedirs(vocab_dir)
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(os.path.join(vocab_dir, "tokenizer.json"))
    with open(os.path.join(vocab_dir, "vocab.txt"), "w") as f:
        f.write("".join(f"{t}\n" for t in tokens))
    n_params = sum(w.size for w in weights.values())
    print(f"{model_size}: {n_params / 1e6:.1f}M parameters, vocabulary {vocab_size}")
    return model_dir, vocab_dir


def _timed(label: str, argv: list[str]) -> tuple[float, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    if run.returncode != 0:
        sys.exit(f"{label} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    line = next(line for line in run.stderr.splitlines() if line.startswith("TIME "))
    seconds, kib = float(line.split()[1]), float(line.split()[2])
    print(f"{label:<20} {seconds:7.1f} s   peak RSS {kib / 1024 / 1024:5.2f} GB")
    return seconds, kib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_size", default="base")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--verify_examples", type=int, default=32)
    parser.add_argument("--work_dir", default=None, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="conversion-bench-")
    try:
        model_dir, vocab_dir = _prepare(work_dir, args.model_size, args.vocab_size)
        py = sys.executable
        _timed(
            "baseline (torch)",
            [py, "-c", _BASELINE, os.path.join(model_dir, "export"), f"{work_dir}/hf_torch"],
        )
        common = ["-m", "conversion.convert", "--model_dir", model_dir, "--vocab_dir", vocab_dir]
        _timed("convert", [py, *common, "--output_dir", f"{work_dir}/hf"])
        _timed(
            "convert --verify",
            [py, *common, "--output_dir", f"{work_dir}/hf_verified", "--verify"]
            + ["--verify_examples", str(args.verify_examples)],
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
