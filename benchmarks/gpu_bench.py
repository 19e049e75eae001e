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
  keras_jax             our model, Keras 3 on JAX, mixed_bfloat16, Keras' jit-compiled JAX train_step,
                        the trainer's default kernels (--pallas_kernels auto: on an H100 or H200 the
                        Pallas LayerNorm and attention kernels; hash dropout masks computed inside
                        the kernels that apply them)
  keras_jax_no_pallas   keras_jax without Pallas kernels (cuDNN fused attention with dropout on a GPU;
                        the default before auto). The runs below that change the masks (threefry,
                        rbg) or name attention (xla) leave out the kernels that need them, and
                        welford and qkv_joined run without Pallas kernels: compare them with this
  keras_jax_xla         keras_jax with attention in XLA (--attention_impl xla: probabilities materialised)
  keras_jax_threefry    keras_jax with Keras' dropout (JAX's Threefry masks, stored for the backward pass)
  keras_jax_xla_threefry  both of the above (the defaults before hash dropout, where cuDNN is refused)
  keras_jax_rbg         keras_jax with dropout masks from XLA's RngBitGenerator (--dropout_rng rbg)
  keras_jax_keras_gelu  keras_jax with keras.ops.gelu in place of trainer.layers.activation
  keras_jax_threefry_keras_gelu  both Threefry masks and keras.ops.gelu (the defaults of 2bd69d1)
  keras_jax_position_sum  keras_jax with the position-embedding gradient as XLA's plain sum over the
                        batch (a batch-minor layout; docs/benchmarks_trainer.md, compiled H100 step)
  keras_jax_welford     keras_jax with LayerNorm's row statistics in one pass (a variadic reduction)
  keras_jax_qkv_joined  keras_jax with queries, keys and values from one joined [H, 3H] product, split
                        (the form before trainer.kernels.project_qkv's three products)
  keras_jax_pallas_norm  keras_jax with each residual sum, hash dropout and LayerNorm in Pallas kernels,
                        forward and backward (--pallas_kernels norm, trainer.pallas.norm)
  keras_jax_pallas_ffn  keras_jax with the feed-forward block's first product as Pallas products, the
                        GELU in the forward's epilogue and its derivative in the backward's
                        (--pallas_kernels ffn, trainer.pallas.ffn; blocks from PALLAS_FFN_BLOCKS)
  keras_jax_pallas_norm_ffn  both of the above
  keras_jax_pallas_norm_attention  the Pallas LayerNorm kernels and the Pallas attention
                        (--pallas_kernels norm,attention)
  keras_jax_cublas      keras_jax with every matrix product on cuBLASLt (no Triton products): biases
                        in the products' epilogues
  keras_jax_gelu_tanh   keras_jax with the tanh GELU (--hidden_act gelu_new, original BERT's) and
                        XLA_FLAGS=--xla_gpu_enable_cublaslt=true (compiled without a GPU, XLA puts
                        no GELU into a cuBLASLt epilogue, with Triton or cuBLAS products alike)
  keras_jax_keras_gelu_tanh  the same with keras.ops.gelu(approximate=True) in bf16 (nor that one)
  torch_gathered        HF BertForPreTraining modules, bf16 autocast, torch.compile, MLM head on P positions
  torch_full            the stock HF model: MLM head on all L positions (its extra FLOPs are not counted)
  keras_jax_noattndrop  keras_jax with attention-probability dropout 0
  torch_gathered_noattndrop

``--large_batch_runs`` (optional too) repeats those runs at ``--large_batch_size``; their rows read
``<run>@b<size>``. Before the runs, a separate process compiles one ``TransformerLayer``'s forward
and backward at the benchmark's shape (default kernels with and without attention dropout, and
XLA attention with dropout) and records the cuDNN custom calls in the optimised HLO
(``attention_probe`` in the JSON): whether cuDNN fused attention was compiled.

The probe then runs cuDNN attention with dropout (``cudnn_dropout_check``): forward and
backward masks agree, the dropped share matches the rate, and masks change between executions.

``--profile_steps N`` profiles N more steps of each run after its timing and prints where the
device time goes (``benchmarks/step_profile.py``); ``--profile_dir`` keeps the raw traces.
``--hlo_dump_dir`` has XLA write each JAX run's train step as optimised HLO text, where the
fusions those profiles name are defined.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys

from benchmarks import step_profile, trainer_common


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
        runs="keras_jax,torch_gathered,keras_jax_xla",
        optional_runs="keras_jax_rbg,keras_jax_gelu_tanh,torch_full,keras_jax_noattndrop,torch_gathered_noattndrop",
        time_budget_s=330,
        optional_run_estimate_s=80,
        run_timeout_s=170,
        out=os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"),
    )
    parser.add_argument(
        "--large_batch_runs", default="", help="runs repeated at --large_batch_size (optional runs)"
    )
    parser.add_argument("--large_batch_size", type=int, default=512)
    parser.add_argument(
        "--no_attention_probe",
        dest="attention_probe",
        action="store_false",
        help="skip the HLO check of which attention implementation XLA compiled",
    )
    parser.add_argument("--probe_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_worker:
        print(PROBE_PREFIX + json.dumps(probe_attention(args)), flush=True)
        return 0
    specs, optional = trainer_common.specs_from_flags(args)
    large = [r for r in args.large_batch_runs.split(",") if r]
    if large and not specs:
        parser.error("--large_batch_runs needs at least one of --runs/--optional_runs")
    for run in large:
        specs.append(dataclasses.replace(specs[0], run=run, batch_size=args.large_batch_size))
    probe = run_attention_probe(argv) if args.attention_probe else None
    if probe is not None:
        print(f"attention probe: {json.dumps(probe)}", flush=True)
    results = trainer_common.run_all(
        specs,
        optional=optional | set(large),
        time_budget_s=args.time_budget_s,
        optional_estimate_s=args.optional_run_estimate_s,
        run_timeout_s=args.run_timeout_s,
        out_path=args.out,  # rewritten after each run, so a killed run keeps the earlier ones
    )
    for r in results:
        if r["run"] in large and r.get("batch_size") == args.large_batch_size != args.batch_size:
            r["run"] = f"{r['run']}@b{args.large_batch_size}"
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"results": results, "attention_probe": probe}, f, indent=1)
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
    for r in ok:
        if r.get("profile"):
            print(step_profile.format_summary(r["run"], r["profile"], 1e3 * r["step_time_s"]))
    print(f"JSON: {args.out}")
    return 0 if ok and len(ok) == len(results) else 1


PROBE_PREFIX = "ATTENTION_PROBE_RESULT "


def probe_attention(args) -> dict:
    """Compiles one TransformerLayer's training forward + backward per attention choice and
    dropout; lists the cuDNN calls in the optimised HLO."""
    os.environ["KERAS_BACKEND"] = "jax"
    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    else:  # as trainer.task does on a GPU
        from trainer.distribute import keep_cudnn_out_of_command_buffers

        keep_cudnn_out_of_command_buffers()
    import jax
    import keras
    import numpy as np

    from trainer.config import BertConfig, KernelOptions
    from trainer.layers import TransformerLayer

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.precision == "bf16" else "float32")
    b, seq = args.batch_size, args.seq_length
    out = {
        "device_name": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    for attention, dropout in (("auto", 0.1), ("xla", 0.1), ("auto", 0.0)):
        config = BertConfig.from_preset(
            args.size, vocab_size=args.vocab_size, attention_probs_dropout_prob=dropout
        )
        layer = TransformerLayer(config, KernelOptions(attention=attention))
        layer.build((None, None, config.hidden_size))
        x = jax.numpy.zeros((b, seq, config.hidden_size), "float32")
        mask = jax.numpy.asarray(np.arange(seq)[None, None, None, :] < np.full((b, 1, 1, 1), seq - 8))
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(tv, ntv, x, mask, layer=layer):
            (y, _), _ = layer.stateless_call(tv, ntv, x, mask, training=True)
            return jax.numpy.sum(y.astype("float32"))

        try:
            hlo = jax.jit(jax.grad(loss)).lower(trainable, non_trainable, x, mask).compile().as_text()
        except Exception as e:  # noqa: BLE001 - recorded: the probe reports, the runs decide
            out[f"{attention}_attention_dropout_{dropout:g}"] = {"error": f"{type(e).__name__}: {e}"[:800]}
            continue
        targets = sorted(set(re.findall(r'custom_call_target="([^"]*)"', hlo)))
        out[f"{attention}_attention_dropout_{dropout:g}"] = {
            "cudnn_custom_calls": [t for t in targets if "cudnn" in t.lower()],
            "cudnn_fused_attention": any("fmha" in t.lower() for t in targets),
        }
    try:
        out["cudnn_dropout_check"] = check_cudnn_dropout(args)
    except Exception as e:  # noqa: BLE001 - recorded
        out["cudnn_dropout_check"] = {"error": f"{type(e).__name__}: {e}"[:800]}
    return out


def check_cudnn_dropout(args) -> dict:
    """Runs cuDNN attention with dropout and checks what a compile cannot show.

    1. With V the identity (D == L) the forward output is the dropped probability matrix, so
       the backward's dV equals out^T @ dO when forward and backward drew the same mask; the
       dropped share of valid entries should be the rate; and the mask must change from one
       execution of the compiled step to the next (XLA advances cuDNN's dropout offset).
    2. A ``TransformerLayer`` (attention dropout only) run 3 times on the same inputs and
       state: its loss must change between executions, as the masks do (with XLA attention and
       the same seed state it would not).
    """
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    from trainer.config import BertConfig, KernelOptions
    from trainer.kernels import cudnn_attention
    from trainer.layers import TransformerLayer

    b, length, heads, rate = 2, 64, 2, 0.5
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(b, length, heads, length)), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=(b, length, heads, length)), jnp.bfloat16)
    v = jnp.broadcast_to(jnp.eye(length, dtype=jnp.bfloat16)[None, :, None, :], q.shape)
    g = jnp.asarray(rng.normal(size=q.shape), jnp.bfloat16)
    valid = np.ones((b, 1, length, length), bool)
    valid[1, ..., length - 8 :] = False
    mask = jnp.asarray(valid)

    @jax.jit
    def step(q, k, v, g):
        out, vjp = jax.vjp(
            lambda q, k, v: cudnn_attention(q, k, v, mask, scale=length**-0.5, dropout_rate=rate, seed=123),
            q,
            k,
            v,
        )
        return out, vjp(g)[2]

    valid_btns = np.broadcast_to(valid.transpose(0, 2, 1, 3), (b, length, heads, length))
    report = {"rate": rate, "dropped_share": [], "max_dv_error": [], "dv_scale": None}
    masks = []
    for _ in range(3):
        out, dv = (np.asarray(a, np.float32) for a in step(q, k, v, g))
        expected = np.einsum("btns,btnd->bsnd", out, np.asarray(g, np.float32))
        report["dropped_share"].append(float(np.mean(out[valid_btns] == 0)))
        report["max_dv_error"].append(float(np.abs(dv - expected).max()))
        report["dv_scale"] = float(np.abs(expected).max())
        masks.append(out == 0)
    report["mask_changes_between_executions"] = [bool(np.any(masks[i] != masks[i + 1])) for i in range(2)]

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = BertConfig.from_preset(args.size, vocab_size=args.vocab_size, hidden_dropout_prob=0.0)
    layer = TransformerLayer(config, KernelOptions(attention="cudnn"))
    layer.build()
    x = jnp.asarray(rng.normal(size=(8, args.seq_length, config.hidden_size)), jnp.float32)
    key_mask = jnp.ones((8, 1, 1, args.seq_length), bool)
    weights = jnp.asarray(
        rng.normal(size=x.shape), jnp.float32
    )  # (a LayerNorm output's sum of squares is fixed)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def layer_loss(tv, ntv):
        def loss(tv):
            (y, _), _ = layer.stateless_call(tv, ntv, x, key_mask, training=True)
            return jnp.sum(y.astype(jnp.float32) * weights)

        return jax.value_and_grad(loss)(tv)[0]

    losses = [float(layer_loss(trainable, non_trainable)) for _ in range(3)]
    report["layer_losses_same_inputs"] = losses
    report["layer_loss_changes_between_executions"] = len(set(losses)) == 3
    return report


def run_attention_probe(argv) -> dict | None:
    """Runs ``probe_attention`` in its own process (no memory held before the timed runs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    cmd = [sys.executable, "-m", "benchmarks.gpu_bench", *argv, "--probe_worker"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "probe timed out after 120 s"}
    for line in proc.stdout.splitlines():
        if line.startswith(PROBE_PREFIX):
            return json.loads(line[len(PROBE_PREFIX) :])
    return {"error": f"probe exit {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}"}


if __name__ == "__main__":
    sys.exit(main())
