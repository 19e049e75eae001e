"""Shared parts of the trainer benchmarks: synthetic batches, the PyTorch baseline, timing.

The PyTorch baseline is Hugging Face ``BertForPreTraining`` with the same sizes, optimizer
(AdamW, decay off LayerNorm and biases, global-norm clip 1.0) and loss (MLM on the masked
positions + NSP) as our trainer. Two ways to run its MLM head:

- ``full``: the stock model, ``labels`` with -100 off the masked positions; its MLM head scores
  all L positions (L / P times the head's work of our model, which gathers first).
- ``gathered``: the same modules, with the masked positions gathered before ``cls.predictions``,
  as our model does: the same FLOPs as ours.

Every configuration is timed in its own process (``run_all``): each framework takes its own
threads or GPU memory, and a compile cache of one never helps another. Our model's process
imports TensorFlow only on the TensorFlow backend: the JAX worker blocks it
(``sys.modules["tensorflow"] = None``), so the GPU benchmark proves that path TensorFlow-free.

Shape key: B batch, L sequence length, P predictions per sequence, H hidden, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from trainer import flops
from trainer.config import BertConfig


def step_flops(
    config: BertConfig, *, batch_size: int, seq_length: int, max_predictions: int
) -> dict[str, int]:
    """Model FLOPs of a step (MLM on P positions) and those of a model scoring all L positions."""
    dims = flops.ModelDims.from_config(config)
    common = dict(batch_size=batch_size, seq_length=seq_length, max_predictions=max_predictions)
    return {
        "model_flops_per_step": flops.train_step_flops(dims, **common),
        "all_positions_flops_per_step": flops.train_step_flops(dims, mlm_positions=seq_length, **common),
    }


def time_steps(
    step: Callable[[int], object],
    sync: Callable[[object], None],
    *,
    warmup: int,
    steps: int,
    windows: int = 5,
) -> dict:
    """Runs ``step(i)`` ``warmup`` times, then ``steps`` times in ``windows`` synchronised windows.

    ``step`` may return a device value; ``sync`` waits for it. The first warm-up step (the
    compilation, usually) is timed on its own.

    Returns:
        ``first_step_s``, ``warmup_s``, ``step_time_s`` (median over windows), ``step_time_min_s``,
        ``step_time_max_s``, ``steps``, ``last`` (the last step's return value, synchronised).
    """
    t0 = time.perf_counter()
    out = step(0)
    sync(out)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        out = step(i)
    sync(out)
    warm_total = time.perf_counter() - t0
    per_window = max(1, steps // windows)
    times = []
    i = warmup
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(per_window):
            out = step(i)
            i += 1
        sync(out)
        times.append((time.perf_counter() - t) / per_window)
    return {
        "first_step_s": first,
        "warmup_s": warm_total,
        "step_time_s": statistics.median(times),
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "steps": per_window * windows,
        "last": out,
    }


def hf_config(config: BertConfig, *, attn_implementation: str = "sdpa"):
    """The Hugging Face ``BertConfig`` with our sizes (the converter's own config map)."""
    import transformers

    from trainer.hf_weights import hf_config_from_bert_config

    return transformers.BertConfig(
        **hf_config_from_bert_config(config), attn_implementation=attn_implementation
    )


def torch_train_step(
    config: BertConfig,
    *,
    device: str,
    mlm: str = "gathered",
    precision: str = "bf16",
    compile_model: bool = True,
    learning_rate: float = 1e-4,
    seed: int = 0,
):
    """Builds Hugging Face ``BertForPreTraining`` and returns ``(step, to_device, model)``.

    ``step(batch)`` runs one AdamW step on a batch made by ``to_device(features, labels)`` and
    returns the loss tensor (not synchronised).

    Args:
        config: our model config (same sizes on both sides).
        device: ``cuda`` or ``cpu``.
        mlm: ``full`` (stock model, MLM head on all positions) or ``gathered`` (see module doc).
        precision: ``bf16`` (autocast; float32 weights and optimizer, like Keras
            ``mixed_bfloat16``) or ``fp32``.
        compile_model: wrap the forward pass and loss in ``torch.compile``.
        learning_rate: AdamW learning rate.
        seed: torch seed for the weights.
    """
    import torch
    import torch.nn.functional as F
    import transformers

    if mlm not in ("full", "gathered"):
        raise ValueError(f"mlm must be 'full' or 'gathered', got {mlm!r}")
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(hf_config(config)).to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, 0.999),
        eps=1e-6,
        fused=device.startswith("cuda"),
        foreach=None if device.startswith("cuda") else True,
    )
    params = list(model.parameters())
    hidden, vocab = config.hidden_size, config.vocab_size
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"
    )

    def loss_fn(b: dict):
        with autocast:
            if mlm == "full":
                out = model(
                    input_ids=b["input_ids"],
                    attention_mask=b["input_mask"],
                    token_type_ids=b["segment_ids"],
                    labels=b["mlm_labels"],  # [B, L], -100 off the masked positions
                    next_sentence_label=b["next_sentence_labels"],
                )
                return out.loss
            enc = model.bert(
                input_ids=b["input_ids"], attention_mask=b["input_mask"], token_type_ids=b["segment_ids"]
            )
            index = b["masked_lm_positions"][:, :, None].expand(-1, -1, hidden)  # [B, P, H]
            gathered = torch.gather(enc.last_hidden_state, 1, index)
            mlm_logits = model.cls.predictions(gathered).float()  # [B, P, V]
            nsp_logits = model.cls.seq_relationship(enc.pooler_output).float()  # [B, 2]
        weights = b["masked_lm_weights"]
        mlm_losses = F.cross_entropy(
            mlm_logits.reshape(-1, vocab), b["masked_lm_ids"].reshape(-1), reduction="none"
        )
        mlm_loss = (mlm_losses * weights.reshape(-1)).sum() / (weights.sum() + 1e-5)
        return mlm_loss + F.cross_entropy(nsp_logits, b["next_sentence_labels"])

    forward = torch.compile(loss_fn, dynamic=False) if compile_model else loss_fn

    def step(b: dict):
        loss = forward(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def to_device(features: dict, labels: dict) -> dict:
        b = {k: torch.as_tensor(v) for k, v in {**features, **labels}.items()}
        b = {k: (v.long() if v.dtype == torch.int32 else v) for k, v in b.items()}
        b["next_sentence_labels"] = b["next_sentence_labels"].reshape(-1)
        mlm_labels = torch.full_like(b["input_ids"], -100)
        mlm_labels.scatter_(1, b["masked_lm_positions"], b["masked_lm_ids"])
        b["mlm_labels"] = mlm_labels
        # The stock model takes the attention mask in the model's dtype-agnostic int form.
        return {k: v.to(device, non_blocking=True) for k, v in b.items()}

    return step, to_device, model


# name -> (worker kind, overrides). Overrides ending in "dropout_prob" change the model config;
# "attention_impl" and "dropout_rng" are the trainer's kernel options (trainer/kernels.py);
# "keras_gelu" puts back keras.ops.gelu in place of trainer.layers.activation;
# "position_sum" forms the position-embedding gradient as XLA's plain sum over the batch (the
# trainer's form before its matrix product, trainer.kernels.add_rows); "welford" computes
# LayerNorm's row statistics in one pass (_welford_row_moments); "qkv_joined" computes queries,
# keys and values as one [H, 3H] product, split (trainer.layers.project_qkv_joined: the JAX
# trainer's form before trainer.kernels.project_qkv); "pallas_kernels" are the trainer's
# --pallas_kernels (trainer.pallas): "norm" computes each residual sum, hash dropout and
# LayerNorm in Pallas kernels; "ffn" the feed-forward block's first product with the GELU in its
# epilogue, forward and backward, as Pallas products; "attention" attention with the hash
# dropout of its probabilities in one Pallas kernel forward and one backward, which writes the
# joined gradient that the query, key and value projections read. Without "pallas_kernels" a
# run takes trainer.task's default, auto (trainer.pallas.automatic: norm and attention on one GPU
# of compute capability 9.x, none elsewhere; none in gpu_compile, which compiles without one).
RUNS = {
    "keras_jax": ("keras_jax", {}),
    "keras_jax_xla": ("keras_jax", {"attention_impl": "xla"}),
    "keras_jax_rbg": ("keras_jax", {"dropout_rng": "rbg"}),
    "keras_jax_threefry": ("keras_jax", {"dropout_rng": "keras"}),
    "keras_jax_xla_threefry": ("keras_jax", {"attention_impl": "xla", "dropout_rng": "keras"}),
    "keras_jax_noattndrop": ("keras_jax", {"attention_probs_dropout_prob": 0.0}),
    "keras_jax_gelu_tanh": (
        "keras_jax",
        {"hidden_act": "gelu_new", "xla_flags": "--xla_gpu_enable_cublaslt=true"},
    ),
    "keras_jax_accum4": ("keras_jax", {"gradient_accumulation_steps": 4}),
    "keras_jax_keras_gelu": ("keras_jax", {"keras_gelu": True}),
    "keras_jax_position_sum": ("keras_jax", {"position_sum": True}),
    # These two change what the Pallas kernels replace: compare them with keras_jax_no_pallas.
    "keras_jax_welford": ("keras_jax", {"welford": True, "pallas_kernels": ()}),
    "keras_jax_qkv_joined": ("keras_jax", {"qkv_joined": True, "pallas_kernels": ()}),
    "keras_jax_no_pallas": ("keras_jax", {"pallas_kernels": ()}),
    "keras_jax_pallas_norm": ("keras_jax", {"pallas_kernels": ("norm",)}),
    "keras_jax_pallas_ffn": ("keras_jax", {"pallas_kernels": ("ffn",)}),
    "keras_jax_pallas_norm_ffn": ("keras_jax", {"pallas_kernels": ("norm", "ffn")}),
    "keras_jax_pallas_attention": ("keras_jax", {"pallas_kernels": ("attention",)}),
    "keras_jax_pallas_norm_attention": ("keras_jax", {"pallas_kernels": ("norm", "attention")}),
    "keras_jax_pallas_all": ("keras_jax", {"pallas_kernels": ("norm", "ffn", "attention")}),
    # Every matrix product on cuBLAS(Lt) rather than XLA's autotuned choice between it and
    # Triton: biases then go into the products' epilogues.
    "keras_jax_cublas": (
        "keras_jax",
        {"xla_flags": "--xla_gpu_enable_triton_gemm=false --xla_gpu_enable_cublaslt=true"},
    ),
    # Keras' tanh GELU in bf16 on cuBLASLt products: whether XLA takes any GELU into a product's
    # epilogue (compiled without a GPU, with --xla_gpu_enable_triton_gemm=false: it does not).
    "keras_jax_keras_gelu_tanh": (
        "keras_jax",
        {"hidden_act": "gelu_new", "keras_gelu": True, "xla_flags": "--xla_gpu_enable_cublaslt=true"},
    ),
    # The defaults of 2bd69d1, measured on an H100: Threefry masks and keras.ops.gelu.
    "keras_jax_threefry_keras_gelu": ("keras_jax", {"dropout_rng": "keras", "keras_gelu": True}),
    "keras_tf": ("keras_tf", {}),
    "keras_tf_accum4": ("keras_tf", {"gradient_accumulation_steps": 4}),
    "torch_gathered": ("torch", {"mlm": "gathered"}),
    "torch_full": ("torch", {"mlm": "full"}),
    "torch_gathered_noattndrop": ("torch", {"mlm": "gathered", "attention_probs_dropout_prob": 0.0}),
    "torch_gathered_eager": ("torch", {"mlm": "gathered", "compile": False}),
    "torch_full_eager": ("torch", {"mlm": "full", "compile": False}),
}
RESULT_PREFIX = "TRAINER_BENCH_RESULT "


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """One configuration to time (what a worker process receives as JSON).

    Attributes:
        run: a key of ``RUNS``.
        size: ``trainer.config`` preset name.
        device: ``gpu`` or ``cpu``.
        precision: ``bf16`` (Keras ``mixed_bfloat16``, torch autocast) or ``fp32``.
        torch_compile: allow ``torch.compile`` (runs named ``*_eager`` never compile).
        peak_tflops: per-device peak for MFU; None: from the device's name (``trainer.flops``).
        profile_steps: after timing, profile this many more steps (``benchmarks.step_profile``).
        profile_dir: keep the raw traces there (None: only the summary in the result).
        hlo_dump_dir: JAX runs: XLA dumps the train step's HLO, before and after its
            optimisations, as text into ``<hlo_dump_dir>/<run>_b<batch>`` (the names of the
            fusions a profile lists are defined there).
    """

    run: str
    size: str
    vocab_size: int
    batch_size: int
    seq_length: int
    max_predictions: int
    steps: int
    warmup: int
    device: str
    precision: str
    torch_compile: bool
    peak_tflops: float | None
    windows: int = 5
    seed: int = 0
    profile_steps: int = 0
    profile_dir: str | None = None
    hlo_dump_dir: str | None = None

    def __post_init__(self):
        if self.run not in RUNS:
            raise ValueError(f"unknown run {self.run!r}; known: {sorted(RUNS)}")
        for name in (
            "vocab_size",
            "batch_size",
            "seq_length",
            "max_predictions",
            "steps",
            "warmup",
            "windows",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.profile_steps < 0:
            raise ValueError(f"--profile_steps must be >= 0, got {self.profile_steps}")
        if self.max_predictions >= self.seq_length:
            raise ValueError(
                f"--max_predictions {self.max_predictions} must be < --seq_length {self.seq_length}"
            )
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"--device must be gpu or cpu, got {self.device!r}")


def _config(spec: BenchSpec, overrides: dict) -> BertConfig:
    model_overrides = {k: v for k, v in overrides.items() if k.endswith("dropout_prob") or k == "hidden_act"}
    return BertConfig.from_preset(spec.size, vocab_size=spec.vocab_size, **model_overrides)


def _batches(spec: BenchSpec, count: int = 4) -> list:
    """``count`` random ``(features, labels)`` batches: ``trainer.task --synthetic_data``'s."""
    from trainer.data_spec import DataSpec
    from trainer.synthetic import synthetic_batches

    shapes = DataSpec(
        train_pattern="",
        eval_pattern=None,
        max_seq_length=spec.seq_length,
        max_predictions_per_seq=spec.max_predictions,
        vocab_size=spec.vocab_size,
        source="benchmark",
    )
    batches = synthetic_batches(
        shapes, batch_size=spec.batch_size, vocab_size=spec.vocab_size, seed=spec.seed
    )
    return [next(batches) for _ in range(count)]


def _finish(spec: BenchSpec, config: BertConfig, timing: dict, extra: dict) -> dict:
    import resource

    # The worker's peak resident memory (Linux: KiB): the host side of a GPU run, everything on CPU.
    extra.setdefault("peak_rss_gib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    counts = step_flops(
        config, batch_size=spec.batch_size, seq_length=spec.seq_length, max_predictions=spec.max_predictions
    )
    peak = spec.peak_tflops * 1e12 if spec.peak_tflops else None
    kind = flops.guess_device_kind(extra.get("device_name", ""))
    if peak is None and kind:
        peak = flops.peak_flops(kind)
    step_s = timing["step_time_s"]
    result = {
        **dataclasses.asdict(spec),
        "model_config": dataclasses.asdict(config),
        **{k: v for k, v in timing.items() if k != "last"},
        "examples_per_s": spec.batch_size / step_s,
        **counts,
        "achieved_tflops": counts["model_flops_per_step"] / step_s / 1e12,
        "peak_tflops_used": peak / 1e12 if peak else None,
        "mfu": None,
        **extra,
    }
    if peak:
        result["mfu"] = flops.mfu(
            flops_per_step=counts["model_flops_per_step"], step_time_s=step_s, peak_flops_per_device=peak
        )
        if extra.get("mlm") == "full":
            # What the stock model executes (MLM head on all L positions) over the peak.
            result["hfu"] = counts["all_positions_flops_per_step"] / step_s / peak
    return result


def _welford_row_moments(xf):
    """``trainer.layers.row_moments`` in one pass (JAX only): a variadic reduction of (count,
    mean, sum of squared deviations) pairs merged as in Chan et al., so that LayerNorm's
    statistics come from the kernel that makes its input. Compiled for an H100 it saves one
    read of every LayerNorm input (docs/benchmarks_trainer.md); on CPU it is slower, and with
    a row mean far from 0 against the spread it loses precision the two-pass form keeps."""
    import jax
    import jax.numpy as jnp

    def merge(a, b):
        na, ma, sa = a
        nb, mb, sb = b
        n = na + nb
        d = mb - ma
        inv = jnp.where(n > 0, 1.0 / jnp.maximum(n, 1.0), 0.0)
        return n, ma + d * (nb * inv), sa + sb + d * d * (na * nb * inv)

    zero = jnp.float32(0)
    n, mean, squares = jax.lax.reduce(
        (jnp.ones_like(xf), xf, jnp.zeros_like(xf)), (zero, zero, zero), merge, (xf.ndim - 1,)
    )
    return mean[..., None], (squares / n)[..., None]


def _keras_setup(spec: BenchSpec, overrides: dict, *, probe: bool = True):
    """Builds our model and the trainer's optimizer under the current Keras backend.

    ``probe=False`` keeps the kernel options as given (no cuDNN compile probe on a device).
    """
    import keras

    from trainer.bert_model import BertPretrainingModel
    from trainer.config import KernelOptions, TrainConfig
    from trainer.optimization import create_optimizer

    policy = "mixed_bfloat16" if spec.precision == "bf16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(spec.seed)
    config = _config(spec, overrides)
    pallas_kinds = overrides.get("pallas_kernels", "auto")  # trainer.task's default
    options = KernelOptions(
        attention=overrides.get("attention_impl", "auto"),
        dropout_rng=overrides.get("dropout_rng", "auto"),
        pallas=() if pallas_kinds == "auto" else pallas_kinds,
    )
    if probe and keras.backend.backend() == "jax":  # as trainer.task does: settle auto with a compile probe
        from trainer import kernels, pallas

        sizes = dict(
            config=config,
            seq_len=spec.seq_length,
            dtype=keras.config.dtype_policy().compute_dtype,
            batch_size=spec.batch_size // overrides.get("gradient_accumulation_steps", 1),
        )
        options = kernels.resolve(pallas.settle(options, pallas_kinds, **sizes), **sizes)
    if overrides.get("keras_gelu"):  # the GELU before trainer.layers.activation, to compare
        from trainer import layers

        layers.activation = lambda config, x: keras.ops.gelu(x, approximate=config.hidden_act == "gelu_new")
    if overrides.get("welford"):
        from trainer import layers

        layers.row_moments = _welford_row_moments
    if overrides.get("position_sum"):
        from trainer import layers

        layers.add_positions = lambda x, positions: x + positions[None, :, :]
    if overrides.get("qkv_joined"):
        from trainer import layers

        layers.project_qkv = layers.project_qkv_joined
    model = BertPretrainingModel(config, options)
    model.gradient_accumulation_steps = overrides.get("gradient_accumulation_steps", 1)
    # The trainer's optimizer: AdamW (no decay on LayerNorm and biases), global-norm clip 1.0;
    # no warmup, so that the learning rate is ~1e-4 from the start, as on the PyTorch side.
    train_config = TrainConfig(
        batch_size=spec.batch_size, train_steps=100_000, warmup_steps=0, precision=policy
    )
    model.compile(optimizer=create_optimizer(train_config, model), jit_compile=True)
    return config, model


def _profile(spec: BenchSpec, timing: dict, framework: str, step, sync) -> dict:
    """``{"profile": summary}`` of ``spec.profile_steps`` steps after the timed ones, or ``{}``."""
    if not spec.profile_steps:
        return {}
    from benchmarks import step_profile

    profile = step_profile.profile_jax if framework == "jax" else step_profile.profile_torch
    first = spec.warmup + timing["steps"]
    name = f"{spec.run}_b{spec.batch_size}"
    return {
        "profile": profile(
            step, sync, first=first, steps=spec.profile_steps, keep_dir=spec.profile_dir, name=name
        )
    }


def run_keras_jax(spec: BenchSpec, overrides: dict) -> dict:
    """Times Keras' JAX train step of ``BertPretrainingModel`` with TensorFlow blocked."""
    os.environ["KERAS_BACKEND"] = "jax"
    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
    if spec.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    else:  # as trainer.task does on a GPU
        from trainer.distribute import keep_cudnn_out_of_command_buffers

        keep_cudnn_out_of_command_buffers()
    if overrides.get("xla_flags"):  # before JAX starts; recorded as xla_flags in the result
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {overrides['xla_flags']}".strip()
    if spec.hlo_dump_dir:
        dump = os.path.join(spec.hlo_dump_dir, f"{spec.run}_b{spec.batch_size}")
        flags = f"--xla_dump_to={dump} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_step.*"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax: set KERAS_BACKEND=jax")
    config, model = _keras_setup(spec, overrides)
    model.optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    # Keras' own JAX train step (what `fit` compiles): the model's compute_loss and metrics, the
    # optimizer's stateless update. The state is donated, so the update happens in place.
    train_step = jax.jit(model.train_step, donate_argnums=0)
    batches = [jax.device_put(b) for b in _batches(spec)]
    compiled = None

    def step(i):
        nonlocal state, compiled
        if compiled is None:  # compiled ahead (inside the first, untimed step) to read its sizes
            compiled = train_step.lower(state, batches[0]).compile()
        logs, state = compiled(state, batches[i % len(batches)])
        return logs["loss"]

    timing = time_steps(
        step, lambda x: x.block_until_ready(), warmup=spec.warmup, steps=spec.steps, windows=spec.windows
    )
    device = jax.devices()[0]
    stats = device.memory_stats() if spec.device == "gpu" else None
    extra = _profile(spec, timing, "jax", step, lambda x: x.block_until_ready())
    extra.update(
        {
            "framework": "keras_jax",
            "kernel_options": dataclasses.asdict(model.kernel_options),
            "loss": float(timing["last"]),
            "device_name": device.device_kind if spec.device == "gpu" else "cpu",
            "versions": {"jax": jax.__version__, "keras": keras.__version__},
            "tensorflow_imported": sys.modules.get("tensorflow") is not None,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
    )
    if stats:
        extra["peak_memory_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
    extra.update(_compiled_sizes(compiled))
    pallas_kinds = model.kernel_options.pallas  # as given, or auto's choice
    extra["pallas_kernels"] = list(pallas_kinds)
    if "ffn" in pallas_kinds:  # the blocks used, and how many layers took the kernels
        from trainer.pallas import ffn

        extra["pallas_ffn"] = {"blocks": list(ffn.BLOCKS), "layers_traced": ffn.taken}
    if "norm" in pallas_kinds:
        from trainer.pallas import norm

        extra["pallas_norm"] = {"blocks": list(norm.BLOCKS), "sublayers_traced": norm.taken}
    if "attention" in pallas_kinds:
        from trainer.pallas import attention

        extra["pallas_attention"] = {"blocks": list(attention.BLOCKS), "layers_traced": attention.taken}
    return _finish(spec, config, timing, extra)


def _compiled_sizes(compiled) -> dict:
    """What XLA says of a compiled step: its temporaries (activations kept for the backward
    pass, gradients, workspace) and its estimate of the bytes its operations read and write."""
    out = {}
    try:
        memory = compiled.memory_analysis()
        out["xla_temp_gib"] = memory.temp_size_in_bytes / 2**30
    except Exception as e:  # not every backend implements it
        out["xla_temp_gib_error"] = f"{type(e).__name__}: {e}"
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        if cost and "bytes accessed" in cost:
            out["xla_bytes_accessed_gb"] = float(cost["bytes accessed"]) / 1e9
    except Exception as e:
        out["xla_cost_error"] = f"{type(e).__name__}: {e}"
    return out


def run_keras_tf(spec: BenchSpec, overrides: dict) -> dict:
    """Times Keras' TensorFlow train step (XLA, ``jit_compile=True``) through ``train_on_batch``."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not tensorflow")
    config, model = _keras_setup(spec, overrides)
    batches = [tuple({k: tf.constant(v) for k, v in part.items()} for part in b) for b in _batches(spec)]

    def step(i):
        x, y = batches[i % len(batches)]
        return model.train_on_batch(x, y, return_dict=True)["loss"]  # returns a float: synchronous

    timing = time_steps(step, lambda x: x, warmup=spec.warmup, steps=spec.steps, windows=spec.windows)
    extra = {
        "framework": "keras_tf",
        "loss": float(timing["last"]),
        "device_name": "cpu" if spec.device == "cpu" else tf.config.list_physical_devices("GPU")[0].name,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    return _finish(spec, config, timing, extra)


def _matmul_tflops(torch, device: str) -> float:
    """Rate of a large matrix product on this device (random data): bf16 8192^3 on a GPU, fp32 2048^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device == "cuda" else 5
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def run_torch(spec: BenchSpec, overrides: dict) -> dict:
    """Times Hugging Face BertForPreTraining (autocast bf16 or fp32, torch.compile, AdamW)."""
    import torch
    import transformers

    device = "cuda" if spec.device == "gpu" else "cpu"
    config = _config(spec, overrides)
    use_compile = spec.torch_compile and overrides.get("compile", True)
    step_fn, to_device, _ = torch_train_step(
        config,
        device=device,
        mlm=overrides["mlm"],
        precision=spec.precision,
        compile_model=use_compile,
        seed=spec.seed,
    )
    batches = [to_device(f, lab) for f, lab in _batches(spec)]

    def sync(x):
        if device == "cuda":
            torch.cuda.synchronize()

    timing = time_steps(
        lambda i: step_fn(batches[i % len(batches)]),
        sync,
        warmup=spec.warmup,
        steps=spec.steps,
        windows=spec.windows,
    )
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    extra = _profile(spec, timing, "torch", lambda i: step_fn(batches[i % len(batches)]), sync)
    extra.update(
        {
            "framework": "torch",
            "mlm": overrides["mlm"],
            "torch_compile": use_compile,
            "loss": float(timing["last"]),
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "torch_threads": torch.get_num_threads(),
            "measured_matmul_tflops": _matmul_tflops(torch, device),
        }
    )
    if peak_memory is not None:
        extra["peak_memory_gib"] = peak_memory
    return _finish(spec, config, timing, extra)


WORKERS = {"keras_jax": run_keras_jax, "keras_tf": run_keras_tf, "torch": run_torch}


def run_worker(spec: BenchSpec, timeout_s: float) -> dict:
    """Times ``spec`` in a fresh Python process, relaying its output; returns its result dict."""
    cmd = [sys.executable, "-m", "benchmarks.trainer_common", json.dumps(dataclasses.asdict(spec))]
    start = time.perf_counter()
    result = None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
            else:
                sys.stdout.write(f"[{spec.run}] {line}")
                sys.stdout.flush()
            if time.perf_counter() - start > timeout_s:
                break
    finally:
        if proc.poll() is None and time.perf_counter() - start > timeout_s:
            proc.kill()
        proc.wait()
    wall = time.perf_counter() - start
    if result is None:
        return {
            "run": spec.run,
            "error": f"no result (exit {proc.returncode} after {wall:.0f} s)",
            "wall_s": wall,
        }
    result["wall_s"] = wall
    return result


def run_all(
    specs: list[BenchSpec],
    *,
    optional: set[str],
    time_budget_s: float,
    optional_estimate_s: float,
    run_timeout_s: float,
    out_path: str | None,
) -> list[dict]:
    """Runs each spec in turn; an optional one starts only while the budget allows. Writes JSON after each."""
    start = time.perf_counter()
    results = []
    for spec in specs:
        elapsed = time.perf_counter() - start
        if spec.run in optional and elapsed + optional_estimate_s > time_budget_s:
            print(f"skipping {spec.run}: {elapsed:.0f} s spent of a {time_budget_s:.0f} s budget", flush=True)
            continue
        print(f"=== {spec.run} (at {elapsed:.0f} s)", flush=True)
        results.append(run_worker(spec, run_timeout_s))
        if out_path:
            os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
            with open(out_path, "w") as f:
                json.dump({"results": results, "total_s": time.perf_counter() - start}, f, indent=1)
    return results


def table(results: list[dict]) -> str:
    """The final short table: one row per run."""
    rows = [
        "run                         ex/s   step ms   best ms  TFLOP/s  MFU     loss    first step s  wall s"
        "  peak GiB    XLA temp GiB"
    ]
    for r in results:
        if "error" in r:
            rows.append(f"{r['run']:<26} ERROR {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        rows.append(
            f"{r['run']:<26} {r['examples_per_s']:>6.1f} {1e3 * r['step_time_s']:>9.2f} "
            f"{1e3 * r['step_time_min_s']:>9.2f} {r['achieved_tflops']:>8.2f}  "
            f"{mfu:<7} {r['loss']:<7.3f} {r['first_step_s']:>12.1f} {r['wall_s']:>7.0f}"
            f"  {_peak_memory(r):<11} {_xla_temp(r)}"
        )
    return "\n".join(rows)


def _xla_temp(result: dict) -> str:
    """XLA's temporaries for the compiled JAX step (None elsewhere), in GiB."""
    temp = result.get("xla_temp_gib")
    return f"{temp:.2f}" if temp is not None else "n/a"


def _peak_memory(result: dict) -> str:
    """The device's peak (GPU runs) or else the worker's peak RSS, in GiB."""
    if result.get("peak_memory_gib") is not None:
        return f"{result['peak_memory_gib']:.2f} dev"
    if result.get("peak_rss_gib") is not None:
        return f"{result['peak_rss_gib']:.2f} rss"
    return "n/a"


def add_common_flags(parser, **defaults) -> None:
    """The flags the CPU and GPU benchmarks share, with each one's defaults."""
    parser.add_argument("--size", default=defaults["size"], help="trainer.config preset")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--batch_size", type=int, default=defaults["batch_size"])
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument(
        "--steps", type=int, default=defaults["steps"], help="timed steps, split into --windows"
    )
    parser.add_argument(
        "--windows", type=int, default=defaults.get("windows", 5), help="synchronised timing windows"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first compiles)")
    parser.add_argument("--device", choices=("gpu", "cpu"), default=defaults["device"])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=defaults["precision"])
    parser.add_argument("--no_torch_compile", dest="torch_compile", action="store_false")
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=defaults.get("peak_tflops"),
        help="per-device peak for MFU (default: from the device's name)",
    )
    parser.add_argument("--runs", default=defaults["runs"], help=f"comma-separated, from {sorted(RUNS)}")
    parser.add_argument("--optional_runs", default=defaults["optional_runs"])
    parser.add_argument(
        "--time_budget_s",
        type=float,
        default=defaults["time_budget_s"],
        help="no optional run starts after this",
    )
    parser.add_argument("--optional_run_estimate_s", type=float, default=defaults["optional_run_estimate_s"])
    parser.add_argument(
        "--run_timeout_s", type=float, default=defaults["run_timeout_s"], help="kill a run after this"
    )
    parser.add_argument("--out", default=defaults["out"])
    parser.add_argument(
        "--profile_steps",
        type=int,
        default=0,
        help="after timing, profile this many steps of each JAX/PyTorch run (kernel time by kind)",
    )
    parser.add_argument("--profile_dir", help="keep the raw profiler traces there (default: summaries only)")
    parser.add_argument(
        "--hlo_dump_dir", help="JAX runs: XLA dumps the train step's HLO as text there, one folder per run"
    )


def specs_from_flags(args) -> tuple[list[BenchSpec], set[str]]:
    """Every spec the flags ask for, validated before anything runs, and the optional names."""
    common = dict(
        size=args.size,
        vocab_size=args.vocab_size,
        batch_size=args.batch_size,
        seq_length=args.seq_length,
        max_predictions=args.max_predictions,
        steps=args.steps,
        warmup=args.warmup,
        windows=args.windows,
        device=args.device,
        precision=args.precision,
        torch_compile=args.torch_compile,
        peak_tflops=args.peak_tflops,
        profile_steps=args.profile_steps,
        profile_dir=args.profile_dir,
        hlo_dump_dir=args.hlo_dump_dir,
    )
    required = [r for r in args.runs.split(",") if r]
    optional = [r for r in args.optional_runs.split(",") if r]
    return [BenchSpec(run=r, **common) for r in required + optional], set(optional)


if __name__ == "__main__":
    # Worker process: time one spec, print its result as one JSON line.
    _spec = BenchSpec(**json.loads(sys.argv[1]))
    _kind, _overrides = RUNS[_spec.run]
    print(RESULT_PREFIX + json.dumps(WORKERS[_kind](_spec, _overrides)), flush=True)
