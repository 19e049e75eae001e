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
# A dry run of the whole script on a CPU (tiny sizes; GPU_SESSION_TASK_FLAGS is appended to the
# trainer.task flags, GPU_SESSION_DEADLINE_S replaces the 560 s deadline; GPU_SESSION_RUNS and
# GPU_SESSION_MORE_RUNS replace the runs of steps 1 and 3 when not empty, and
# GPU_SESSION_LARGE_BATCH_RUNS those repeated at batch 512, where empty means none;
# GPU_SESSION_SWEEP_FLAGS is appended to the benchmarks.pallas_ffn flags of step 0,
# GPU_SESSION_NORM_SWEEP_FLAGS to the benchmarks.pallas_norm ones and
# GPU_SESSION_ATTENTION_SWEEP_FLAGS to the benchmarks.pallas_attention ones;
# GPU_SESSION_TASK_KERNELS names step 2's --pallas_kernels in place of auto):
#   GPU_SESSION_TASK_FLAGS="--model_size tiny --batch_size 8 --train_steps 30 --log_every 10 \
#     --checkpoint_every 30" GPU_SESSION_SWEEP_FLAGS="--rows 1024 --hidden 128 --intermediate 512 \
#     --repeats 1" GPU_SESSION_ATTENTION_SWEEP_FLAGS="--batch_size 8 --seq_len 128 --heads 2 \
#     --repeats 1" GPU_SESSION_NORM_SWEEP_FLAGS="--batch_size 8 --seq_len 128 --hidden 128 \
#     --repeats 1" OUT=/tmp/gs bash benchmarks/gpu_session.sh --size tiny --batch_size 8 \
#     --steps 4 --windows 2 --device cpu --peak_tflops 0.33 --no_torch_compile --profile_steps 2
#
# Writes $OUT/pallas_{ffn,norm,attention}_sweep.json (+ .log, each sweep that ran),
# $OUT/gpu.txt, $OUT/gpu_bench.json (+ .log), $OUT/hlo_after_optimizations.tar.gz (the optimised
# HLO of step 1's JAX runs), $OUT/trainer_task.log and $OUT/gpu_bench_more.json (+ .log); at the
# end every .log but trainer_task.log, the sweeps and gpu.txt are packed into
# $OUT/session_logs.tar.gz, since a device call brings back at most 8 files;
# made to end within about 9.5 minutes of its start (one device call of at most 600 s):
#   0. when a run of step 1 uses the Pallas feed-forward products (trainer.pallas.ffn), their
#      block shapes timed against XLA's block on the card (at most 80 s); the fastest whose
#      gradients are about as close to float32 as XLA's goes to those runs (PALLAS_FFN_BLOCKS);
#      the Pallas LayerNorm kernels' blocks against the XLA path (at most 60 s,
#      PALLAS_NORM_BLOCKS) and the Pallas attention's against cuDNN's and XLA's attention (at
#      most 50 s, PALLAS_ATTENTION_BLOCKS), which every later step takes;
#   1. the attention probe (cuDNN calls compiled, cuDNN dropout checked on the device), then our
#      step with the trainer's defaults (--pallas_kernels auto: on an H100 or H200 the Pallas
#      residual/dropout/LayerNorm kernels and the Pallas attention, trainer.pallas), our step
#      without Pallas kernels (cuDNN attention) and PyTorch with torch.compile on the masked
#      positions, each profiled, with the optimised HLO of ours;
#   2. 300 steps of trainer.task itself (fit, callbacks, checkpoint, evaluation, export; its
#      progress lines give MFU), with its default --pallas_kernels (or GPU_SESSION_TASK_KERNELS),
#      cut short where the deadline needs it, skipped when under 90 s are left;
#   3. while the session's deadline allows: the Pallas attention alone, the Pallas LayerNorm
#      kernels alone, queries, keys and values from one joined product (the form before), the
#      position-embedding gradient as XLA's plain sum (the form before), no attention-probability
#      dropout, Threefry dropout masks, LayerNorm statistics in one pass, every matrix product on
#      cuBLASLt, the tanh GELU (original BERT's), keras.ops.gelu in place of
#      trainer.layers.activation, XLA attention, RngBitGenerator dropout masks, the stock PyTorch
#      model, every Pallas kernel (the feed-forward products too), the Pallas feed-forward
#      products alone, and our step at batch 512.
set -euo pipefail
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
rm -f "$OUT"/gpu_bench.json "$OUT"/gpu_bench_more.json "$OUT"/hlo_after_optimizations.tar.gz "$OUT"/pallas_*_sweep.* \
    "$OUT"/session_logs.tar.gz
rm -rf /tmp/gpu_hlo /tmp/gpu_task  # left by an earlier call on the same machine
if ! python3 -c "import keras" 2>/dev/null; then
    ls .whl/*.whl >/dev/null  # fails here, with the path, when the wheels were not carried
    python3 -m pip install -q --no-index --no-deps --target /tmp/keras_site .whl/*.whl
    export PYTHONPATH=/tmp/keras_site${PYTHONPATH:+:$PYTHONPATH}
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi
start=$SECONDS
deadline=${GPU_SESSION_DEADLINE_S:-560}
runs=${GPU_SESSION_RUNS:-keras_jax,keras_jax_no_pallas,torch_gathered}
more_runs=${GPU_SESSION_MORE_RUNS:-keras_jax_pallas_attention,keras_jax_pallas_norm,keras_jax_qkv_joined,keras_jax_position_sum,keras_jax_noattndrop,keras_jax_threefry,keras_jax_welford,keras_jax_cublas,keras_jax_gelu_tanh,keras_jax_keras_gelu,keras_jax_xla,keras_jax_rbg,torch_full,keras_jax_pallas_all,keras_jax_pallas_ffn}
# 0. A block sweep: benchmarks.pallas_$1 times each candidate against the XLA path on the card
# in at most $2 s (starting none after $3 s), with the flags in $4; the fastest whose gradients
# are about as close to float32 as XLA's is exported as PALLAS_<KIND>_BLOCKS for what follows.
sweep() {
    local kind=$1 upper
    upper=$(echo "$1" | tr a-z A-Z)
    KERAS_BACKEND=jax timeout "$2" python3 -m "benchmarks.pallas_$kind" --time_budget_s "$3" \
        --out "$OUT/pallas_${kind}_sweep.json" $4 2>&1 | tee "$OUT/pallas_${kind}_sweep.log" \
        || echo "pallas_$kind exited with $?"
    best=$(sed -n "s/^PALLAS_${upper}_BEST //p" "$OUT/pallas_${kind}_sweep.log" | tail -1)
    if [ -n "$best" ]; then
        echo "== PALLAS_${upper}_BLOCKS=$best"
        export "PALLAS_${upper}_BLOCKS=$best"
    fi
}
# The feed-forward products' blocks when a run of step 1 uses them; the LayerNorm kernels' and
# attention's, which the trainer's default (keras_jax, trainer.task) takes on an H100 or H200.
all=",$runs,$more_runs,"
if [[ ",$runs," == *_pallas_*ffn,* || ",$runs," == *_pallas_all,* ]]; then
    sweep ffn 80 55 "${GPU_SESSION_SWEEP_FLAGS:-}"
fi
if [[ $all == *,keras_jax,* || $all == *_pallas_norm* || $all == *_pallas_all,* ]]; then
    sweep norm 60 40 "${GPU_SESSION_NORM_SWEEP_FLAGS:-}"
fi
if [[ $all == *,keras_jax,* || $all == *_pallas_*attention,* || $all == *_pallas_all,* ]]; then
    sweep attention 50 30 "${GPU_SESSION_ATTENTION_SWEEP_FLAGS:-}"
fi
KERAS_BACKEND=jax python3 -m benchmarks.gpu_bench --size base --batch_size 256 \
    --runs "$runs" --optional_runs "" \
    --run_timeout_s 150 --profile_steps 5 --hlo_dump_dir /tmp/gpu_hlo \
    --out "$OUT/gpu_bench.json" "$@" 2>&1 | tee "$OUT/gpu_bench.log" || echo "gpu_bench exited with $?"
# The optimised HLO of each JAX run's step: where the fusions that the profiles name come from.
if [ -d /tmp/gpu_hlo ]; then
    (cd /tmp/gpu_hlo && find . -name '*after_optimizations.txt' | tar czf "$OUT/hlo_after_optimizations.tar.gz" -T -) \
        || echo "no HLO archive"
fi
# Should cuDNN attention still abort the process (as it did in CUDA graphs under jaxlib 0.11.2,
# before trainer.distribute.CUDNN_OUTSIDE_COMMAND_BUFFERS), the rest runs without CUDA graphs.
if [ -f "$OUT/gpu_bench.json" ] && python3 -c "import json, sys; r = json.load(open(sys.argv[1]))['results'];
sys.exit(0 if any(x['run'].startswith('keras_jax') and 'exit -6' in x.get('error', '') for x in r) else 1)" \
    "$OUT/gpu_bench.json" 2>/dev/null; then
    echo "== a keras_jax run aborted: the rest runs with XLA_FLAGS=--xla_gpu_enable_command_buffer="
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer="
fi
# The trainer itself, end to end, on the GPU with NumPy synthetic batches (no TensorFlow there):
# BERT-base, batch 256; its examples/s after the first window, against the bare step above with the same kernels,
# is what fit, the callbacks and the input add. At most 200 s, less when the deadline is near.
# Skipped when under 90 s are left: too short to compile and time BERT-base. With the trainer's
# default --pallas_kernels, auto (on an H100 or H200: norm and attention, as keras_jax above);
# GPU_SESSION_TASK_KERNELS names others.
task_kernels=${GPU_SESSION_TASK_KERNELS:-auto}
echo "== trainer.task with --pallas_kernels $task_kernels"
task_s=$((deadline - (SECONDS - start) - 10))
task_s=$((task_s < 200 ? task_s : 200))
if [ "$task_s" -ge 90 ]; then
    KERAS_BACKEND=jax timeout "$task_s" python3 -m trainer.task --synthetic_data --vocab_size 32000 \
        --model_size base --batch_size 256 --train_steps 300 --warmup_steps 30 --log_every 100 \
        --checkpoint_every 300 --eval_steps 5 --model_dir /tmp/gpu_task --pallas_kernels "$task_kernels" \
        ${GPU_SESSION_TASK_FLAGS:-} 2>&1 \
        | tee "$OUT/trainer_task.log" \
        || echo "trainer.task exited with $?"
else
    echo "== trainer.task skipped: $((deadline - (SECONDS - start))) s left before the deadline" \
        | tee "$OUT/trainer_task.log"
fi
left=$((deadline - (SECONDS - start)))
echo "== $((SECONDS - start)) s gone, $left s left for the optional runs"
if [ "$left" -gt 80 ]; then
    KERAS_BACKEND=jax python3 -m benchmarks.gpu_bench --size base --batch_size 256 --no_attention_probe \
        --runs "" --optional_runs "$more_runs" \
        --large_batch_runs "${GPU_SESSION_LARGE_BATCH_RUNS-keras_jax}" --large_batch_size 512 \
        --time_budget_s "$left" --optional_run_estimate_s 70 --run_timeout_s 120 --profile_steps 5 \
        --out "$OUT/gpu_bench_more.json" "$@" 2>&1 | tee "$OUT/gpu_bench_more.log" || echo "gpu_bench exited with $?"
fi
echo "== session done in $((SECONDS - start)) s"
# A device call brings back at most 8 files: the logs, the sweeps and gpu.txt travel as one archive.
(cd "$OUT" && shopt -s nullglob && packed=$(printf '%s\n' *.log pallas_*_sweep.json gpu.tx[t] \
    | grep -vx trainer_task.log || true) && [ -n "$packed" ] && tar czf session_logs.tar.gz $packed \
    && rm -f $packed) || echo "no logs packed"
