"""Pretrain BERT (masked LM + next sentence) with Keras 3 on TPU, GPU or CPU.

``KERAS_BACKEND`` picks TensorFlow (default: ``tf.distribute`` strategies) or JAX
(``keras.distribution``). A job killed at any moment and started again with the same command
resumes from its last checkpoint in ``MODEL_DIR/checkpoints``; the end writes
``MODEL_DIR/export/`` (docs/export_format.md), which ``conversion.convert`` reads.

Local, on the CPU::

    python -m trainer.task --data_dir OUT/pretraining/seq128 --model_dir /tmp/bert_tiny \\
        --model_size tiny --train_steps 2000 --batch_size 32

TPU VM, data and checkpoints on GCS (or through ``python -m trainer.launch_tpu``)::

    python -m trainer.task --data_dir gs://B/out/pretraining/seq128 --model_dir gs://B/runs/base \\
        --model_size base --strategy tpu --precision mixed_bfloat16 --batch_size 1024 \\
        --train_steps 1000000 --warmup_steps 10000 --steps_per_execution 200 \\
        --checkpoint_every 10000 --log_every 1000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from trainer import fileio
from trainer.config import (
    ATTENTION_IMPLS,
    DATA_RESUME_MODES,
    DROPOUT_RNGS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    BertConfig,
    KernelOptions,
    TrainConfig,
    pallas_kinds,
)
from trainer.distribute import STRATEGIES

logger = logging.getLogger("trainer")

# Model-size flags -> BertConfig fields.
_MODEL_OVERRIDES = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainer.task", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", help="directory with metadata.json and the TFRecords (local or gs://)")
    g.add_argument("--train_files", help="glob of training TFRecords (default: from metadata.json)")
    g.add_argument("--eval_files", help="glob of validation TFRecords (default: from metadata.json)")
    g.add_argument("--max_seq_length", type=int, help="L of the records (needed without metadata.json)")
    g.add_argument(
        "--max_predictions_per_seq", type=int, help="P of the records (needed without metadata.json)"
    )
    g.add_argument("--vocab_size", type=int, help="vocabulary size (needed without metadata.json)")
    g.add_argument("--mlm_only", action="store_true", help="train the masked LM only, even on NSP data")
    g.add_argument(
        "--synthetic_data", action="store_true", help="random batches of the right shapes, no files"
    )
    g.add_argument(
        "--data_resume",
        choices=DATA_RESUME_MODES,
        default=d.data_resume,
        help="after a resume: read a fresh shuffle (reshuffle) or skip the records already read (skip)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model_size", default="tiny", choices=sorted(PRESETS), help="named size (Turc et al. grid)"
    )
    g.add_argument("--num_layers", type=int)
    g.add_argument("--hidden_size", type=int)
    g.add_argument("--num_heads", type=int)
    g.add_argument("--intermediate_size", type=int)
    g.add_argument("--hidden_act", choices=("gelu", "gelu_new"))
    g.add_argument("--hidden_dropout", type=float)
    g.add_argument("--attention_dropout", type=float)
    g.add_argument("--max_position_embeddings", type=int)
    g.add_argument(
        "--init_from_hf", metavar="DIR", help="start from a Hugging Face BERT folder (local or gs://)"
    )
    g.add_argument(
        "--init_from_export",
        metavar="DIR",
        help="start from a trainer export (MODEL_DIR/export of an earlier run, local or gs://), "
        "e.g. a second phase on longer sequences",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--model_dir", required=True, help="checkpoints, TensorBoard logs and export/ (local or gs://)"
    )
    g.add_argument("--train_steps", type=int, default=d.train_steps)
    g.add_argument(
        "--batch_size", type=int, default=d.batch_size, help="global batch size of one optimizer update"
    )
    g.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=d.gradient_accumulation_steps,
        help="run each batch as K micro-batches, one after the other, and apply the mean of their "
        "gradients once (same update, activations of batch/K examples at a time)",
    )
    g.add_argument("--learning_rate", type=float, default=d.learning_rate)
    g.add_argument("--warmup_steps", type=int, default=d.warmup_steps)
    g.add_argument("--end_learning_rate", type=float, default=d.end_learning_rate)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    g.add_argument("--weight_decay", type=float, default=d.weight_decay)
    g.add_argument("--clip_norm", type=float, default=d.clip_norm, help="global-norm clipping (0: off)")
    g.add_argument("--adam_epsilon", type=float, default=d.epsilon)
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("execution")
    g.add_argument("--strategy", choices=STRATEGIES, default="auto")
    g.add_argument("--tpu", help="TPU name (TensorFlow backend; default: the local TPU VM)")
    g.add_argument("--cpu_replicas", type=int, default=0, help="split the CPU into N replicas (tests)")
    g.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="Keras dtype policy; auto: mixed_bfloat16 on TPUs and GPUs with bf16 (compute capability "
        ">= 8.0), float32 elsewhere",
    )
    g.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=d.jit_compile)
    g.add_argument(
        "--attention_impl",
        choices=ATTENTION_IMPLS,
        default="auto",
        help="JAX backend: cudnn = fused attention with dropout inside (GPU, bf16/fp16); "
        "auto: cudnn where it applies, else xla (docs/trainer.md)",
    )
    g.add_argument(
        "--dropout_rng",
        choices=DROPOUT_RNGS,
        default="auto",
        help="JAX backend: hash (auto's choice) computes each mask element from its position and "
        "the seed, again in the backward pass; rbg: XLA's RngBitGenerator (one accelerator); "
        "keras: Keras' generator (auto's choice on TensorFlow)",
    )
    g.add_argument(
        "--pallas_kernels",
        type=_pallas_kinds,
        default="auto",
        metavar="{auto,none,all,norm,ffn,attention}",
        help="JAX backend on one NVIDIA GPU, bf16: run these parts of each layer in Pallas (Triton) "
        "kernels (a comma-separated list, or all): norm = residual sum, dropout and LayerNorm; ffn "
        "= the first feed-forward product with its GELU; attention = attention with its dropout "
        "(sequences up to 128). auto (the default): norm and attention where they fit, on one GPU "
        "of compute capability 9.x (an H100 measured them faster; the H200 is the same chip); none "
        "elsewhere (docs/trainer.md)",
    )
    g.add_argument("--steps_per_execution", type=int, default=d.steps_per_execution)
    g.add_argument("--checkpoint_every", type=int, default=d.checkpoint_every)
    g.add_argument("--keep_checkpoints", type=int, default=d.keep_checkpoints)
    g.add_argument(
        "--eval_every", type=int, default=d.eval_every, help="steps between evaluations (0: at the end)"
    )
    g.add_argument(
        "--eval_steps", type=int, default=d.eval_steps, help="batches per evaluation (0: the whole split)"
    )
    g.add_argument("--log_every", type=int, default=d.log_every)
    g.add_argument(
        "--peak_tflops",
        type=_positive_float,
        default=None,
        help="peak bf16 TFLOP/s of one device (one replica: on TPU v2 and v3 a TensorCore, half a "
        "chip), for the MFU on the progress lines; default: from the device's name where known "
        "(H100, H200, A100; on JAX TPU v2 to v6e; trainer/flops.py)",
    )
    return p.parse_args(argv)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        train_steps=args.train_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        end_learning_rate=args.end_learning_rate,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        epsilon=args.adam_epsilon,
        clip_norm=args.clip_norm,
        precision="float32" if args.precision == "auto" else args.precision,
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        eval_every=args.eval_every,
        eval_steps=args.eval_steps,
        log_every=args.log_every,
        seed=args.seed,
        data_resume=args.data_resume,
    )


def data_spec_from_args(args: argparse.Namespace):
    """The ``DataSpec``, or None for an import-and-export run without data."""
    from trainer.data_spec import DataSpec, load_data_spec

    if args.synthetic_data:
        return DataSpec(
            train_pattern="",
            eval_pattern="",
            max_seq_length=args.max_seq_length or 128,
            max_predictions_per_seq=args.max_predictions_per_seq or 20,
            vocab_size=args.vocab_size,
            nsp=not args.mlm_only,
            source="--synthetic_data",
        )
    if not (args.data_dir or args.train_files):
        if args.train_steps == 0:
            return None
        raise ValueError("give --data_dir, --train_files or --synthetic_data")
    return load_data_spec(
        data_dir=args.data_dir,
        train_files=args.train_files,
        eval_files=args.eval_files,
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions_per_seq,
        vocab_size=args.vocab_size,
        nsp=False if args.mlm_only else None,
    )


def bert_config_from_args(args: argparse.Namespace, spec) -> tuple[BertConfig, dict | None]:
    """The model config (and imported weights with ``--init_from_hf`` or ``--init_from_export``)."""
    overrides = {
        field: getattr(args, flag)
        for flag, field in _MODEL_OVERRIDES.items()
        if getattr(args, flag) is not None
    }
    use_nsp = spec.nsp if spec is not None else not args.mlm_only
    if args.init_from_hf and args.init_from_export:
        raise ValueError("give --init_from_hf or --init_from_export, not both")
    source = args.init_from_hf or args.init_from_export
    if not source:
        vocab_size = (spec.vocab_size if spec is not None else None) or args.vocab_size
        if vocab_size is None:
            raise ValueError("the vocabulary size is unknown: give --vocab_size (or a metadata.json)")
        return BertConfig.from_preset(
            args.model_size, vocab_size=vocab_size, use_nsp=use_nsp, **overrides
        ), None
    flag = "--init_from_hf" if args.init_from_hf else "--init_from_export"
    if overrides:
        raise ValueError(f"{flag} takes the model size from {source}; drop {sorted(overrides)}")
    if args.init_from_hf:
        from trainer.hf_weights import load_hf_bert  # numpy only

        config, weights, report = load_hf_bert(source)
        for line in report:
            logger.info("init_from_hf: %s", line)
    else:
        config, weights = _load_init_export(source)
    if args.vocab_size is not None and args.vocab_size != config.vocab_size:
        raise ValueError(
            f"--vocab_size={args.vocab_size} differs from vocab_size={config.vocab_size} of {source}"
        )
    return dataclasses.replace(config, use_nsp=use_nsp), weights


def _load_init_export(export_dir: str) -> tuple[BertConfig, dict]:
    """The config and weights of a trainer export, for ``--init_from_export``."""
    from trainer.export import STATE_NAME, load_export

    try:
        config, weights, state = load_export(export_dir)
    except FileNotFoundError as e:
        nested = fileio.join(export_dir, "export")
        if fileio.exists(fileio.join(nested, STATE_NAME)):
            raise FileNotFoundError(f"{e} (did you mean {nested}?)") from e
        raise
    logger.info("init_from_export: %s, step %s, %d weights", export_dir, state.get("step", "?"), len(weights))
    return config, weights


def check_model_dir(model_dir: str, config: BertConfig, train_config: TrainConfig) -> None:
    """Writes the run's configs to ``model_dir``; refuses a model dir trained with another model."""
    path = fileio.join(model_dir, "bert_config.json")
    if fileio.exists(path):
        previous = BertConfig.from_json_file(path)
        if previous != config:
            diff = {
                k: (v, getattr(config, k)) for k, v in previous.to_dict().items() if getattr(config, k) != v
            }
            raise ValueError(
                f"{model_dir} holds a run of another model; (saved, now) differ in {diff}. "
                "Use a new --model_dir or the same model flags."
            )
    else:
        config.to_json_file(path)
    fileio.write_text_atomic(
        fileio.join(model_dir, "train_config.json"), json.dumps(train_config.to_dict(), indent=2) + "\n"
    )


def run(args: argparse.Namespace) -> dict:
    """Trains (or resumes) and exports; returns the training state written to the export."""
    import keras

    from trainer import data_spec as data_spec_lib
    from trainer.distribute import create_runtime

    train_config = train_config_from_args(args)
    auto_pallas = args.pallas_kernels == "auto"  # settled below, once the device is known
    kernel_options = KernelOptions(
        attention=args.attention_impl,
        dropout_rng=args.dropout_rng,
        pallas=() if auto_pallas else args.pallas_kernels,
    )
    kernel_options.check_backend()
    spec = data_spec_from_args(args)
    config, init_weights = bert_config_from_args(args, spec)
    if spec is not None:
        data_spec_lib.check_model_fits_data(spec, config)
    logger.info("model: %s", json.dumps(config.to_dict(), sort_keys=True))

    runtime = create_runtime(
        strategy=args.strategy,
        tpu=args.tpu,
        cpu_replicas=args.cpu_replicas,
        jit_compile=train_config.jit_compile,
    )
    if args.precision == "auto" and runtime.bf16:
        train_config = dataclasses.replace(train_config, precision="mixed_bfloat16")
    logger.info("backend %s on %s, %d replica(s)", runtime.backend, runtime.description, runtime.num_replicas)
    micro_batches = train_config.gradient_accumulation_steps
    if train_config.batch_size % (runtime.num_replicas * micro_batches):
        raise ValueError(
            f"--batch_size {train_config.batch_size} is not divisible by {runtime.num_replicas} replicas"
            + (f" x --gradient_accumulation_steps {micro_batches}" if micro_batches > 1 else "")
        )
    if spec is not None and (kernel_options.pallas or (auto_pallas and runtime.backend == "jax")):
        from trainer import pallas  # before anything is written or compiled

        kernel_options = pallas.settle(
            kernel_options,
            args.pallas_kernels,
            config=config,
            batch_size=train_config.batch_size // micro_batches,
            seq_len=spec.max_seq_length,
            dtype=keras.DTypePolicy(train_config.precision).compute_dtype,
            devices=runtime.num_replicas,
        )
    if runtime_is_chief():
        check_model_dir(args.model_dir, config, train_config)
    if runtime.backend == "jax" and spec is not None and not args.synthetic_data and _tensorflow_importable():
        # Before anything starts TensorFlow's runtime (set_random_seed seeds it too).
        from trainer.input_pipeline import keep_off_gpus

        hidden = keep_off_gpus()
        if hidden:
            logger.info("TensorFlow reads the data on the CPU: %s hidden from it", ", ".join(hidden))
    keras.utils.set_random_seed(train_config.seed)
    keras.mixed_precision.set_global_policy(train_config.precision)

    if spec is not None and not args.synthetic_data:
        if not _tensorflow_importable():
            raise ValueError(
                "reading TFRecords needs TensorFlow (pip install tensorflow, or tensorflow-cpu next to "
                "JAX); without it only --synthetic_data runs"
            )
        from trainer import input_pipeline

        input_pipeline.check_records(input_pipeline.list_files(spec.train_pattern), spec)
        if spec.eval_pattern:
            input_pipeline.check_records(input_pipeline.list_files(spec.eval_pattern), spec)

    from trainer import kernels
    from trainer.bert_model import BertPretrainingModel
    from trainer.checkpoints import CheckpointManager
    from trainer.optimization import create_optimizer

    if spec is not None:  # a run that trains: settle the kernels for its device and sizes
        kernel_options = kernels.resolve(
            kernel_options,
            config=config,
            seq_len=spec.max_seq_length,
            dtype=keras.config.dtype_policy().compute_dtype,
            batch_size=train_config.batch_size // micro_batches,
        )
    with runtime.scope():
        model = BertPretrainingModel(config, kernel_options)
        if init_weights is not None:
            model.set_named_weights(init_weights)
        model.gradient_accumulation_steps = micro_batches
        optimizer = create_optimizer(train_config, model)
        model.compile(
            optimizer=optimizer,
            jit_compile=runtime.jit_compile,
            steps_per_execution=train_config.steps_per_execution,
        )
        model.optimizer.build(model.trainable_variables)
    n_params = sum(_size(v.shape) for v in model.trainable_variables)
    logger.info(
        "%s parameters, %s, precision %s", f"{n_params:,}", train_config.optimizer, train_config.precision
    )

    manager = CheckpointManager(
        fileio.join(args.model_dir, "checkpoints"),
        model=model,
        optimizer=model.optimizer,
        keep=train_config.keep_checkpoints,
    )
    meta = manager.restore()
    start_step = meta["step"] if meta else 0
    if meta:
        logger.info(
            "resumed from checkpoint at step %d (%s)",
            start_step,
            fileio.join(manager.directory, f"ckpt-{start_step:09d}"),
        )
    else:
        logger.info("no checkpoint in %s: starting at step 0", manager.directory)

    trainer = _Training(args, train_config, spec, runtime, model, manager)
    state = trainer.train(start_step)
    export_dir = fileio.join(args.model_dir, "export")
    if runtime_is_chief():
        from trainer.export import export_model

        export_model(model, config, export_dir, state)
        logger.info("exported the model to %s", export_dir)
    return state


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"want a number > 0, got {text!r}")
    return value


def _pallas_kinds(text: str) -> tuple[str, ...] | str:
    if text.strip() == "auto":
        return "auto"
    try:
        return pallas_kinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def runtime_is_chief() -> bool:
    from trainer.variables import is_chief

    return is_chief()


class _Training:
    """The datasets and the ``fit`` call of one run, from ``start_step`` to ``train_steps``."""

    def __init__(self, args, train_config: TrainConfig, spec, runtime, model, manager):
        self.args = args
        self.cfg = train_config
        self.spec = spec
        self.runtime = runtime
        self.model = model
        self.manager = manager
        self._eval_ds = None

    def _pipeline_batch(self) -> tuple[int, int, int]:
        """(batch per input pipeline, number of pipelines, this one's index)."""
        hosts = self.runtime.num_hosts
        return self.cfg.batch_size // hosts, hosts, self.runtime.host_index

    def train_dataset(self, start_step: int):
        batch, shards, index = self._pipeline_batch()
        if self.args.synthetic_data and self.runtime.backend == "jax":
            from trainer.synthetic import synthetic_batches  # NumPy: no TensorFlow needed on JAX

            return synthetic_batches(
                self.spec,
                batch_size=batch,
                vocab_size=self.model.config.vocab_size,
                seed=self.cfg.seed + start_step,
            )
        from trainer import input_pipeline

        if self.args.synthetic_data:
            return input_pipeline.make_synthetic_dataset(
                self.spec,
                batch_size=batch,
                vocab_size=self.model.config.vocab_size,
                seed=self.cfg.seed + start_step,
            )
        skip = self.cfg.data_resume == "skip"
        return input_pipeline.make_dataset(
            self.spec,
            pattern=self.spec.train_pattern,
            batch_size=batch,
            # A fresh order after a resume (reshuffle), or the same order continued (skip).
            seed=self.cfg.seed if skip else self.cfg.seed + start_step,
            num_shards=shards,
            shard_index=index,
            skip_batches=start_step if skip else 0,
        )

    def eval_dataset(self):
        """``(dataset, steps)`` of the validation data, or ``(None, 0)`` without one.

        The number of batches is always explicit: Keras 3.15's ``evaluate`` on TensorFlow
        without XLA counts one extra, empty batch in the means of a dataset of unknown length.
        """
        if self._eval_ds is None and self.args.synthetic_data and self.runtime.backend == "jax":
            from trainer.synthetic import synthetic_batches

            batch = self._pipeline_batch()[0]
            vocab_size = self.model.config.vocab_size
            # A function, so that every evaluation starts a fresh iterator of the same batches.
            self._eval_ds = (
                lambda: synthetic_batches(
                    self.spec, batch_size=batch, vocab_size=vocab_size, seed=self.cfg.seed, stream=1
                ),
                self.cfg.eval_steps or 10,
            )
        if self._eval_ds is None:
            from trainer import input_pipeline

            batch, shards, index = self._pipeline_batch()
            steps = self.cfg.eval_steps
            if self.args.synthetic_data:
                steps = steps or 10
                ds = input_pipeline.make_synthetic_dataset(
                    self.spec,
                    batch_size=batch,
                    vocab_size=self.model.config.vocab_size,
                    seed=self.cfg.seed - 1,
                )
            elif self.spec.eval_pattern:
                examples, available = input_pipeline.eval_batches(
                    self.spec, self.spec.eval_pattern, batch_size=batch, num_shards=shards
                )
                if available == 0:
                    logger.warning("the validation split %s is empty: no evaluation", self.spec.eval_pattern)
                    self._eval_ds = (None, 0)
                    return self._eval_ds
                steps = min(steps, available) if steps else available
                if steps == available:
                    logger.info(
                        "evaluation: all %d examples in %d batch(es) of %d per host", examples, steps, batch
                    )
                else:
                    logger.info(
                        "evaluation: the first %d of %d batches of %d per host (--eval_steps)",
                        steps,
                        available,
                        batch,
                    )
                ds = input_pipeline.make_eval_dataset(
                    self.spec,
                    pattern=self.spec.eval_pattern,
                    batch_size=batch,
                    batches=steps,
                    num_shards=shards,
                    shard_index=index,
                )
                self._eval_ds = (ds, steps)
                return self._eval_ds
            else:
                self._eval_ds = (None, 0)
                return self._eval_ds
            self._eval_ds = (ds.repeat().take(steps), steps)
        return self._eval_ds

    def evaluate(self) -> dict[str, float]:
        ds, steps = self.eval_dataset()
        if ds is None:
            return {}
        if callable(ds):  # NumPy synthetic batches: a fresh iterator
            ds = ds()
        results = self.model.evaluate(ds, steps=steps, verbose=0, return_dict=True)
        results = {k: float(v) for k, v in results.items()}
        # The loss of the whole evaluation, as the training loss is defined: the mean MLM loss
        # over its masked tokens plus the mean NSP loss over its examples (Keras' own "loss"
        # averages the batches' losses, whatever each holds).
        results["loss"] = results["mlm_loss"] + results.get("nsp_loss", 0.0)
        return results

    def save(self, step: int, train_metrics: dict) -> None:
        if not runtime_is_chief():
            return
        from trainer.callbacks import NonFiniteLossError

        bad = self.manager.non_finite_weights()
        if bad:
            raise NonFiniteLossError(
                f"weights are not finite at step {step} ({bad[:5]}): no checkpoint written; "
                "training stops and keeps the last good checkpoint"
            )
        t = time.perf_counter()
        self.manager.save(step, {"examples_seen": step * self.cfg.batch_size, "train_metrics": train_metrics})
        logger.info("saved checkpoint at step %d in %.1f s", step, time.perf_counter() - t)

    def _flops(self) -> dict:
        """The model's matrix-product FLOPs per example of a training step and the peak FLOP/s of
        all devices (``--peak_tflops`` per device, else from the device's name), for the progress
        lines' TFLOP/s and MFU; logged once."""
        from trainer import flops

        if self.spec is None:
            return {}
        per_example = flops.train_step_flops(
            flops.ModelDims.from_config(self.model.config),
            batch_size=1,
            seq_length=self.spec.max_seq_length,
            max_predictions=self.spec.max_predictions_per_seq,
        )
        devices = self.runtime.num_replicas
        per_device = self.args.peak_tflops * 1e12 if self.args.peak_tflops else None
        per_device = per_device or flops.device_peak_flops(self.runtime.device_name)
        if per_device:
            logger.info(
                "model FLOPs: %.4g GFLOP an example a step; bf16 peak %.4g TFLOP/s (%d x %.4g, %s)",
                per_example / 1e9, devices * per_device / 1e12, devices, per_device / 1e12,
                "--peak_tflops" if self.args.peak_tflops else self.runtime.device_name,
            )  # fmt: skip
        else:
            logger.info(
                "model FLOPs: %.4g GFLOP an example a step; no MFU: no known peak for %r (--peak_tflops)",
                per_example / 1e9,
                self.runtime.device_name or self.runtime.platform,
            )
        return {"flops_per_example": per_example, "peak_flops": devices * per_device if per_device else None}

    def train(self, start_step: int) -> dict:
        from trainer.callbacks import StopRequested, SummaryWriter, TrainingLoop, fit_callbacks, log_eval
        from trainer.optimization import make_schedule

        cfg = self.cfg
        remaining = cfg.train_steps - start_step
        summaries = SummaryWriter(
            fileio.join(self.args.model_dir, "tensorboard") if runtime_is_chief() else None
        )
        loop = TrainingLoop(
            initial_step=start_step,
            global_batch_size=cfg.batch_size,
            log_every=cfg.log_every,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every,
            schedule=make_schedule(cfg),
            evaluate=self.evaluate if self.spec is not None else None,
            save_checkpoint=self.save,
            summaries=summaries,
            **self._flops(),
        )
        if remaining > 0:
            if remaining % cfg.steps_per_execution:
                raise ValueError(
                    f"{remaining} steps remain, not a multiple of --steps_per_execution {cfg.steps_per_execution}"
                )
            micro = cfg.gradient_accumulation_steps
            logger.info(
                "training steps %d to %d, global batch %d%s",
                start_step + 1,
                cfg.train_steps,
                cfg.batch_size,
                f" in {micro} micro-batches of {cfg.batch_size // micro}" if micro > 1 else "",
            )
            with _stop_on_sigterm(loop):
                self.model.fit(
                    self.train_dataset(start_step),
                    epochs=1,
                    steps_per_epoch=remaining,
                    callbacks=fit_callbacks(loop, model=self.model, steps=remaining),
                    shuffle=False,  # the dataset shuffles itself
                    verbose=0,
                )
            if loop.stopped_at is not None and loop.stopped_at < cfg.train_steps:
                raise StopRequested(
                    f"stopped by {signal.Signals(loop.stop_signal).name} at step {loop.stopped_at} after "
                    "saving its checkpoint; run the same command to resume"
                )
            logger.info("training done at step %d", cfg.train_steps)
            if self.model.kernel_options.pallas:
                from trainer import pallas

                logger.info(
                    "Pallas kernels traced into the steps: %s",
                    pallas.traced(self.model.kernel_options.pallas),
                )
            if cfg.train_steps % cfg.checkpoint_every:
                self.save(cfg.train_steps, loop.last_train_metrics)
        else:
            logger.info("step %d >= --train_steps %d: nothing to train", start_step, cfg.train_steps)
        final_step = max(cfg.train_steps, start_step)
        eval_metrics = loop.last_eval_metrics
        if self.spec is not None and (not cfg.eval_every or final_step % cfg.eval_every or remaining <= 0):
            eval_metrics = self.evaluate()
            if eval_metrics:
                log_eval(final_step, eval_metrics)
                summaries.scalars("eval", final_step, eval_metrics)
        return {
            "step": final_step,
            "examples_seen": final_step * cfg.batch_size,
            "train_metrics": loop.last_train_metrics,
            "eval_metrics": eval_metrics,
            "data_metadata": self.spec.metadata if self.spec is not None else None,
            "train_config": cfg.to_dict(),
            "keras_backend": self.runtime.backend,
        }


def _tensorflow_importable() -> bool:
    """False on a machine without TensorFlow (JAX alone): only ``--synthetic_data`` works there."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _stop_on_sigterm(loop):
    """While training, SIGTERM (a preempted VM, ``kill``) saves a checkpoint and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: loop.request_stop(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.distribute import prepare_environment

    prepare_environment(os.environ.get("KERAS_BACKEND", "tensorflow"), args.cpu_replicas, args.strategy)
    from trainer.callbacks import NonFiniteLossError, StopRequested

    try:
        run(args)
    except NonFiniteLossError as e:
        logger.error("stopped: %s", e)
        return 2
    except StopRequested as e:
        logger.warning("%s", e)
        return 128 + signal.SIGTERM
    except (ValueError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
