"""GPU benchmark: our Keras BERT on the JAX backend against Hugging Face BertForPreTraining + torch.compile.

For a machine with JAX, PyTorch and transformers but no TensorFlow: the Keras side imports
``trainer.config``, ``trainer.bert_model``, ``trainer.optimization`` and ``trainer.flops`` with
TensorFlow blocked, so any TensorFlow import on that path fails the run.

Each configuration runs in its own process, one after the other, on the same synthetic batches
(benchmarks/trainer_common.py). Timed: the compiled train step (forward, backward, global-norm
clip, AdamW update) on batches already on the device; the median over 5 windows of steps, the
device synchronised at the end of each. MFU counts the model's matrix-product FLOPs
(``trainer.flops``, MLM head on the P masked positions) against the card's datasheet peak
(H100/H200 SXM: 989 TFLOP/s dense bf16); the JSON also holds the rate of a large bf16 matrix
product measured on the same card.

    KERAS_BACKEND=jax python3 -m benchmarks.gpu_bench --size base --batch_size 256 --out $OUT/gpu_bench.json
    # local check on CPU, TensorFlow blocked on the Keras side:
    python -m benchmarks.gpu_bench --size tiny --batch_size 8 --steps 5 --device cpu --peak_tflops 0.33 \\
        --no_torch_compile --optional_runs ""

Runs (``--runs``, in order; each of ``--optional_runs`` starts only while ``--time_budget_s`` allows):
  keras_jax             our model, Keras 3 on JAX, mixed_bfloat16, Keras' jit-compiled JAX train_step
  torch_gathered        HF BertForPreTraining modules, bf16 autocast, torch.compile, MLM head on P positions
  torch_full            the stock HF model: MLM head on all L positions (its extra FLOPs are not counted)
  keras_jax_noattndrop  keras_jax with attention-probability dropout 0 (the fused attention path)
  torch_gathered_noattndrop
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import trainer_common


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    trainer_common.add_common_flags(
        parser,
        size="base",
        batch_size=256,
        steps=50,
        device="gpu",
        precision="bf16",
        runs="keras_jax,torch_gathered,torch_full",
        optional_runs="keras_jax_noattndrop,torch_gathered_noattndrop",
        time_budget_s=330,
        optional_run_estimate_s=80,
        run_timeout_s=170,
        out=os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"),
    )
    args = parser.parse_args(argv)
    specs, optional = trainer_common.specs_from_flags(args)
    results = trainer_common.run_all(
        specs,
        optional=optional,
        time_budget_s=args.time_budget_s,
        optional_estimate_s=args.optional_run_estimate_s,
        run_timeout_s=args.run_timeout_s,
        out_path=args.out,
    )
    ok = [r for r in results if "error" not in r]
    devices = sorted({r["device_name"] for r in ok})
    peaks = sorted({r["peak_tflops_used"] for r in ok if r.get("peak_tflops_used")})
    measured = [r["measured_matmul_tflops"] for r in ok if r.get("measured_matmul_tflops")]
    print(
        f"\nBERT {args.size}, batch {args.batch_size}, seq {args.seq_length}, P {args.max_predictions}, "
        f"{args.precision}; device {', '.join(devices)}; MFU against {', '.join(f'{p:g}' for p in peaks) or '?'} "
        f"TFLOP/s; measured {'bf16' if args.device == 'gpu' else 'fp32'} matmul "
        f"{max(measured) if measured else float('nan'):.1f} TFLOP/s"
    )
    print(trainer_common.table(results))
    print(f"JSON: {args.out}")
    return 0 if ok and len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
