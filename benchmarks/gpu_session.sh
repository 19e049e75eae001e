#!/usr/bin/env bash
# One GPU benchmark session on a machine with JAX, PyTorch and transformers but no TensorFlow
# or Keras (docs/benchmarks_trainer.md). Run from the repository root, with the Keras wheels in
# .whl (made on the development machine with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       keras==3.15.1 namex==0.1.0 optree==0.20.0 )
#
#   OUT=/some/dir bash benchmarks/gpu_session.sh [extra gpu_bench flags]
#
# Writes $OUT/gpu_bench.json, $OUT/gpu_bench.log and $OUT/trainer_task.log; about 8-9 minutes
# on an H100/H200: the attention probe (cuDNN calls compiled, cuDNN dropout checked on the
# device), then our step with cuDNN attention, with XLA attention and with RngBitGenerator
# dropout masks, PyTorch with torch.compile (masked positions, then stock), our step at batch
# 512, each profiled; then 300 steps of trainer.task itself.
set -euo pipefail
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
if ! python3 -c "import keras" 2>/dev/null; then
    ls .whl/*.whl >/dev/null  # fails here, with the path, when the wheels were not carried
    python3 -m pip install -q --no-index --no-deps --target /tmp/keras_site .whl/*.whl
    export PYTHONPATH=/tmp/keras_site${PYTHONPATH:+:$PYTHONPATH}
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi
KERAS_BACKEND=jax python3 -m benchmarks.gpu_bench --size base --batch_size 256 \
    --runs keras_jax,keras_jax_xla,torch_gathered --optional_runs keras_jax_rbg,keras_jax_gelu_tanh,torch_full \
    --large_batch_runs keras_jax --large_batch_size 512 \
    --time_budget_s 480 --optional_run_estimate_s 70 --run_timeout_s 150 --profile_steps 5 \
    --out "$OUT/gpu_bench.json" "$@" 2>&1 | tee "$OUT/gpu_bench.log" || echo "gpu_bench exited with $?"
# Then the trainer itself, end to end (fit, callbacks, checkpoint, evaluation, export) on the
# GPU with NumPy synthetic batches (no TensorFlow there): BERT-base, batch 256, 300 steps.
KERAS_BACKEND=jax timeout 240 python3 -m trainer.task --synthetic_data --vocab_size 32000 \
    --model_size base --batch_size 256 --train_steps 300 --warmup_steps 30 --log_every 100 \
    --checkpoint_every 300 --eval_steps 5 --model_dir /tmp/gpu_task 2>&1 | tee "$OUT/trainer_task.log"
