"""Pallas (Triton) kernels for parts of each encoder layer, JAX backend on an NVIDIA GPU
(``--pallas_kernels``, ``trainer.config.KernelOptions.pallas``). ``trainer.task``'s default,
``auto``, takes ``AUTO_KINDS`` on one GPU of compute capability 9.x (``automatic``); a
``KernelOptions`` built in code has none unless it names them.

Three kinds, each chosen alone or with the others:

- ``norm`` (``trainer.pallas.norm``): each sublayer's residual sum, its hidden-state dropout and
  LayerNorm, one kernel forward and one backward, which also sums the gradients of the output's
  two readers.
- ``ffn`` (``trainer.pallas.ffn``): the feed-forward block's first product with its bias and the
  exact GELU in the product's epilogue, forward, and the GELU's derivative in the epilogue of
  the backward product that reads it.
- ``attention`` (``trainer.pallas.attention``): attention with the dropout of its
  probabilities, one kernel forward (the probabilities never leave it) and one backward, which
  writes the query, key and value gradients as the one array their projections read.

Each computes the function of the trainer's XLA path with ``--dropout_rng hash``: the same
elements dropped, the same roundings (bf16 products, float32 softmax and LayerNorm); the sums'
order differs. The tests check each against that path on CPU, where Pallas interprets the kernels
(slowly: for tests, not for training).

What they need, checked before a run starts (``check``): the JAX backend; one device, an NVIDIA
GPU of compute capability 8.0 or later (or the CPU, interpreted); bf16 or fp16 activations;
``hash`` dropout masks; and shapes the kernels' blocks divide (``refusals``). Blocks can be set
with ``PALLAS_NORM_BLOCKS``, ``PALLAS_FFN_BLOCKS`` and ``PALLAS_ATTENTION_BLOCKS``
(``benchmarks.pallas_norm``, ``benchmarks.pallas_ffn`` and ``benchmarks.pallas_attention`` time
candidates on a GPU and name the fastest).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import keras

from trainer.config import PALLAS_KINDS, KernelOptions
from trainer.kernels import log_once

_16_BIT = ("bfloat16", "float16")
# What --pallas_kernels auto takes: the kinds that made BERT-base's step faster on an H100
# (docs/benchmarks_trainer.md, fourth run): norm and attention, 53.6 to 48.8 ms a step. The
# feed-forward products (ffn) were slower than XLA's (cuBLAS) there, so auto leaves them out.
AUTO_KINDS = ("norm", "attention")
AUTO_CAPABILITY_MAJOR = 9  # Hopper, where they were measured


def checked_blocks(values, source: str, count: int, fits: Callable[[tuple], bool], want: str) -> tuple:
    """``values`` as ``count`` positive integers that ``fits``; a ValueError naming ``source`` and
    saying what it wants (``want``) otherwise. Each kernel module's block check."""
    try:
        blocks = tuple(int(str(v)) for v in values)
    except (TypeError, ValueError):
        blocks = ()
    if len(blocks) != count or min(blocks) < 1 or not fits(blocks):
        raise ValueError(f"{source}: want {want}")
    return blocks


def environment_blocks(variable: str, default: tuple, check: Callable[[list, str], tuple]) -> tuple:
    """The blocks that the environment ``variable`` names (comma-separated, made blocks by
    ``check``), or ``default`` when it is unset or empty: a module's ``BLOCKS``, read when the
    module is imported, so that a bad value stops the run there, by name."""
    text = os.environ.get(variable)
    if not text:
        return default
    return check(text.split(","), f"{variable}={text!r}")


def refusals(kinds, *, config, batch_size: int, seq_len: int, dtype, dropout_rng: str) -> list[str]:
    """Why each of ``kinds`` cannot run at these sizes (``batch_size`` examples a device and a
    micro-batch, ``seq_len``, the model ``config``), ``dtype`` activations and ``dropout_rng``
    masks: ``"kind: reason"`` each; empty when all can."""
    reasons = []
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype not in _16_BIT:
        reasons.append(
            f"activations are {dtype}; the kernels need --precision mixed_bfloat16 or mixed_float16"
        )
    dropping = {"norm": config.hidden_dropout_prob, "attention": config.attention_probs_dropout_prob}
    if dropout_rng != "hash" and any(dropping.get(kind, 0) > 0 for kind in kinds):
        reasons.append(f"--dropout_rng {dropout_rng}; the kernels draw the masks of --dropout_rng hash")
    shape = (batch_size, seq_len, config.hidden_size)
    for kind in kinds:
        module = _module(kind)
        if kind == "norm":
            reason = module.refusal(shape)
        elif kind == "ffn":
            rows = batch_size * seq_len
            reason = module.refusal(rows, config.hidden_size, config.intermediate_size, config.hidden_act)
        else:
            reason = module.refusal(shape, config.num_attention_heads)
        if reason:
            reasons.append(f"{kind}: {reason}")
    others = [k for k in kinds if k != "attention"]
    if others and len(reasons) == 1 and reasons[0].startswith("attention: "):
        # attention alone refused (e.g. BERT's second phase at 512 tokens): the rest still apply
        reasons[0] += f" (--pallas_kernels {','.join(others)} leaves attention to XLA or cuDNN)"
    return reasons


def _module(kind: str):
    """The module of ``kind``'s kernels, imported only when chosen (each reads its blocks from
    the environment when imported)."""
    import importlib

    return importlib.import_module(f"trainer.pallas.{kind}")


def check(options: KernelOptions, *, config, batch_size: int, seq_len: int, dtype) -> None:
    """Refuses ``options.pallas`` that this run cannot honour, naming the flag and every reason:
    another backend than JAX, a device other than one NVIDIA GPU of compute capability 8.0 or
    later (the CPU is accepted, with a warning: the kernels are interpreted there), or
    ``refusals``."""
    if not options.pallas:
        return
    flag = f"--pallas_kernels {','.join(options.pallas)}"
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(f"{flag} needs KERAS_BACKEND=jax, not {backend}")
    import jax

    from trainer.distribute import gpu_has_bf16

    reasons = []
    if "attention" in options.pallas and options.attention == "cudnn":
        reasons.append("--attention_impl cudnn names another kernel for attention; keep one")
    distribution = keras.distribution.distribution()
    devices = distribution.device_mesh.devices.size if distribution is not None else 1
    if devices > 1:
        reasons.append(f"data-parallel over {devices} devices; the kernels run on one device")
    platform = jax.default_backend()
    if platform == "gpu":
        device = jax.devices()[0]
        capability = getattr(device, "compute_capability", None)
        if not gpu_has_bf16(capability):
            reasons.append(f"{device.device_kind} has compute capability {capability}, below 8.0")
    elif platform != "cpu":
        reasons.append(f"JAX runs on {platform}; the kernels are written for NVIDIA GPUs (Triton)")
    reasons += refusals(
        options.pallas, config=config, batch_size=batch_size, seq_len=seq_len, dtype=dtype,
        dropout_rng=options.dropout_for(backend),
    )  # fmt: skip
    if reasons:
        raise ValueError(f"{flag}: " + "; ".join(reasons))
    if platform == "cpu":
        log_once(
            logging.WARNING, f"{flag} on the CPU: Pallas interprets the kernels there, far slower than XLA"
        )
    log_once(logging.INFO, f"Pallas kernels: {', '.join(options.pallas)}")


def automatic(
    options: KernelOptions,
    *,
    config,
    batch_size: int,
    seq_len: int,
    dtype,
    devices: int = 1,
    backend: str | None = None,
    platform: str | None = None,
    capability: str | None = None,
) -> tuple[str, ...]:
    """``--pallas_kernels auto``: the kinds of ``AUTO_KINDS`` that this run can take (``refusals``)
    on one NVIDIA GPU of compute capability 9.x, where they were measured faster than XLA and
    cuDNN; none elsewhere (another backend, the CPU, a TPU, several devices, another GPU).
    Attention only while ``--attention_impl`` is auto. Logs what it chose and why.

    ``backend`` (Keras'), ``platform`` (JAX's default backend) and ``capability`` (``"9.0"``)
    come from Keras and JAX unless given; ``devices`` is the run's device count.
    """
    why = None
    backend = backend or keras.backend.backend()
    if backend != "jax":
        why = f"Keras runs on {backend}"
    elif platform is None or (platform == "gpu" and capability is None):
        import jax

        platform = platform or jax.default_backend()
        if platform == "gpu" and capability is None:
            capability = getattr(jax.devices()[0], "compute_capability", None)
    if why is None and platform != "gpu":
        why = f"JAX runs on {platform}"
    elif why is None and devices > 1:
        why = f"{devices} devices; the kernels run on one"
    elif why is None and str(capability).split(".")[0] != str(AUTO_CAPABILITY_MAJOR):
        why = f"compute capability {capability}; they were measured faster on {AUTO_CAPABILITY_MAJOR}.x only"
    if why is not None:
        log_once(logging.INFO, f"Pallas kernels: none (--pallas_kernels auto: {why})")
        return ()
    wanted = [k for k in AUTO_KINDS if k != "attention" or options.attention == "auto"]
    sizes = dict(config=config, batch_size=batch_size, seq_len=seq_len, dtype=dtype)
    reasons = {kind: refusals((kind,), **sizes, dropout_rng=options.dropout_for(backend)) for kind in wanted}
    kinds = tuple(kind for kind in wanted if not reasons[kind])
    left = "; ".join(dict.fromkeys(r for kind in wanted for r in reasons[kind]))
    if options.attention != "auto":
        left = "; ".join(filter(None, [left, f"attention: --attention_impl {options.attention}"]))
    log_once(
        logging.INFO,
        f"Pallas kernels: {', '.join(kinds) or 'none'} (--pallas_kernels auto on compute capability "
        f"{capability}{'; left out: ' + left if left else ''})",
    )
    return kinds


def settle(
    options: KernelOptions, kinds, *, config, batch_size: int, seq_len: int, dtype, devices: int = 1
) -> KernelOptions:
    """``options`` with the Pallas kernels of a run: ``kinds`` is ``"auto"`` (``automatic``'s
    choice) or the kinds named, which ``check`` refuses with every reason where they cannot run.
    ``batch_size`` is a device's micro-batch; ``trainer.task`` and the benchmark runs call it."""
    if kinds == "auto":
        sizes = dict(config=config, batch_size=batch_size, seq_len=seq_len, dtype=dtype)
        kinds = automatic(options, **sizes, devices=devices)
    options = dataclasses.replace(options, pallas=tuple(kinds))
    check(options, config=config, batch_size=batch_size, seq_len=seq_len, dtype=dtype)
    return options


def call_refusal(dtype, rate: float, options: KernelOptions, symbolic: bool) -> str | None:
    """Why a layer call cannot take the kernels whatever its shapes (another backend than JAX,
    ``dtype`` activations other than 16-bit, a ``rate`` of dropout whose masks are not hash
    masks, a symbolic build), or None."""
    backend = keras.backend.backend()
    dtype = keras.backend.standardize_dtype(dtype)
    if backend != "jax":
        return f"Keras runs on {backend}"
    if dtype not in _16_BIT:
        return f"activations are {dtype}"
    if rate > 0 and options.dropout_for(backend) != "hash":
        return f"dropout masks from {options.dropout_for(backend)}, not hash"
    return "symbolic" if symbolic else None


def fell_back(kind: str, reason: str, symbolic: bool) -> None:
    """Logs once per reason that a layer asked for ``kind``'s kernels runs XLA's path instead
    (``check`` refuses such runs before they start; a symbolic build is not logged)."""
    if not symbolic:
        log_once(logging.WARNING, f"--pallas_kernels {kind}: {reason}; this part runs in XLA")


def traced(kinds=PALLAS_KINDS) -> str:
    """How many layer calls each of ``kinds``' kernels were traced into so far (a step traces
    each layer once; evaluation, without dropout, again): ``"norm 4, ffn 2, attention 2"``; 0
    for a kind whose every call fell back."""
    return ", ".join(f"{kind} {_module(kind).taken}" for kind in kinds)


__all__ = [
    "AUTO_KINDS", "PALLAS_KINDS", "automatic", "call_refusal", "check", "checked_blocks", "environment_blocks",
    "fell_back", "refusals", "settle", "traced",
]  # fmt: skip
