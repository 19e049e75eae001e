"""CPU benchmark: our trainer's train step against Hugging Face BertForPreTraining in PyTorch.

Same sizes, batch, sequence length, optimizer (AdamW, no decay on LayerNorm and biases, clip
1.0), float32, in one run; each configuration in its own process (benchmarks/trainer_common.py).
The step time is the median over 10 windows of 2 steps; on a shared machine the best window
("best ms") is the least disturbed figure.
Our side is Keras' TensorFlow train step with ``jit_compile=True`` (XLA), as ``trainer.task``
runs it, fed by ``train_on_batch`` with batches already in memory; PyTorch runs eager (the usual
CPU baseline). MFU is the model's matrix-product FLOPs (``trainer.flops``) over a stated peak.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.trainer_cpu --size mini --batch_size 32

Runs (``--runs``, then ``--optional_runs`` while ``--time_budget_s`` allows):
  keras_tf             our model and train step, TensorFlow backend, XLA
  keras_jax            the same model on the JAX backend (Keras' jitted JAX train_step)
  keras_tf_accum4, keras_jax_accum4
                       the same step with --gradient_accumulation_steps 4 (4 micro-batches in
                       the compiled step): the cost of the loop, and the peak memory it saves
  torch_gathered_eager HF BertForPreTraining modules, MLM head on the P masked positions (our FLOPs)
  torch_full_eager     the stock HF model (MLM head on all L positions)
  torch_gathered       torch_gathered_eager under torch.compile

Each worker reports its peak resident memory (``peak GiB ... rss``): model, optimizer and the
step's activations, since everything lives in host memory on a CPU.

The default peak, 0.332 TFLOP/s, is 2 cores x 2.6 GHz x 64 float32 FLOP per cycle (two 512-bit
FMA pipes, AMD Zen 5 at its base clock); pass ``--peak_tflops`` for another machine.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import trainer_common

CPU_PEAK_TFLOPS = 2 * 2.596e9 * 64 / 1e12


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    trainer_common.add_common_flags(
        parser,
        size="mini",
        batch_size=32,
        steps=20,
        windows=10,
        device="cpu",
        precision="fp32",
        peak_tflops=CPU_PEAK_TFLOPS,
        runs="keras_tf,torch_gathered_eager,torch_full_eager",
        optional_runs="keras_jax,torch_gathered",
        time_budget_s=900,
        optional_run_estimate_s=120,
        run_timeout_s=600,
        out=os.path.join("/tmp", "trainer_cpu.json"),
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
    measured = [r["measured_matmul_tflops"] for r in ok if r.get("measured_matmul_tflops")]
    print(
        f"\nBERT {args.size}, batch {args.batch_size}, seq {args.seq_length}, P {args.max_predictions}, "
        f"{args.precision}, {os.cpu_count()} CPU cores; MFU against {args.peak_tflops:.3f} TFLOP/s; "
        f"measured fp32 2048^3 matmul (torch) {max(measured) if measured else float('nan'):.3f} TFLOP/s"
    )
    print(trainer_common.table(results))
    print(f"JSON: {args.out}")
    return 0 if ok and len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
