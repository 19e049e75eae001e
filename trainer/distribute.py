"""Where the model runs: a ``tf.distribute`` strategy (TensorFlow backend) or a
``keras.distribution`` data-parallel layout (JAX backend), chosen by ``--strategy``.

TensorFlow: ``tpu`` is ``TPUStrategy``; ``gpu`` is ``MirroredStrategy`` over the visible GPUs;
``cpu`` is the default strategy on the CPU, or ``MirroredStrategy`` over ``cpu_replicas``
logical CPU devices (for tests); ``auto`` picks TPU when ``--tpu`` is given, else the GPUs,
else the CPU. JAX: every device of the chosen platform in one data-parallel mesh (all hosts of
a TPU pod after ``jax.distributed.initialize``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import sys

logger = logging.getLogger("trainer")

STRATEGIES = ("auto", "tpu", "gpu", "cpu")

# XLA:GPU in jaxlib 0.11.2 aborts the whole process ("Check failed:
# local_device_ordinal.has_value()" in CudnnGraph::PackOperands) when it records a cuDNN graph,
# such as the fused attention of trainer/kernels.py, into a CUDA graph (a command buffer); seen
# on an H100 at the first step. The flag leaves cuDNN calls outside command buffers and every
# other kind of call inside them.
CUDNN_OUTSIDE_COMMAND_BUFFERS = "--xla_gpu_enable_command_buffer=-CUDNN"


@dataclasses.dataclass
class Runtime:
    """The devices a job trains on.

    Attributes:
        backend: ``"tensorflow"`` or ``"jax"``.
        strategy: the ``tf.distribute.Strategy`` (TensorFlow) or None.
        num_replicas: data-parallel replicas over all hosts.
        num_hosts, host_index: input pipelines and this one's index; on TensorFlow the
            strategy splits one global-batch dataset itself, so these are 1 and 0.
        jit_compile: whether the train step may be XLA-compiled here.
        description: one line for the log.
        platform: ``"tpu"``, ``"gpu"`` or ``"cpu"``.
        bf16: whether the devices compute in bfloat16 natively (TPUs, NVIDIA GPUs of compute
            capability 8.0 or later): ``--precision auto`` then means ``mixed_bfloat16``.
        device_name: the first device's name as the framework reports it (``NVIDIA H100 80GB
            HBM3``, ``TPU v4``), for its peak FLOP/s (``trainer.flops.device_peak_flops``);
            empty where the framework does not say.
    """

    backend: str
    strategy: object | None
    num_replicas: int
    num_hosts: int
    host_index: int
    jit_compile: bool
    description: str
    platform: str = "cpu"
    bf16: bool = False
    device_name: str = ""

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def gpu_has_bf16(compute_capability) -> bool:
    """True for NVIDIA compute capability 8.0 (Ampere) or later; ``"9.0"``, ``(8, 6)`` or None."""
    if not compute_capability:
        return False
    if isinstance(compute_capability, str):
        compute_capability = compute_capability.split(".")
    try:
        return int(compute_capability[0]) >= 8
    except (TypeError, ValueError, IndexError):
        return False


def prepare_environment(backend: str, cpu_replicas: int, strategy: str = "auto") -> None:
    """Sets what must be set before the backend starts: the JAX host device count; on JAX with
    ``--strategy gpu``, or ``auto`` off a TPU host, cuDNN calls kept out of CUDA graphs
    (``CUDNN_OUTSIDE_COMMAND_BUFFERS``); on JAX with ``--strategy cpu`` the CPU as JAX's only
    platform, so that no array of the job (model, optimizer, batches, kernel probes) lands on an
    accelerator of the machine."""
    if backend != "jax":
        return
    may_use_gpu = strategy == "gpu" or (strategy == "auto" and not _tpu_host())
    if may_use_gpu and keep_cudnn_out_of_command_buffers():
        logger.info("XLA_FLAGS: %s (cuDNN calls stay outside CUDA graphs)", CUDNN_OUTSIDE_COMMAND_BUFFERS)
    if cpu_replicas > 1:
        flag = f"--xla_force_host_platform_device_count={cpu_replicas}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    if strategy == "cpu":
        previous = os.environ.get("JAX_PLATFORMS", "")
        if previous and previous != "cpu":
            logger.info("--strategy cpu: JAX_PLATFORMS=%s replaced by cpu", previous)
        os.environ["JAX_PLATFORMS"] = "cpu"
        if "jax" in sys.modules:  # already imported: its config read the variable at import
            sys.modules["jax"].config.update("jax_platforms", "cpu")


def _tpu_host() -> bool:
    """Whether this machine shows a Cloud TPU (its device files, or the variables of a TPU VM)
    and no NVIDIA GPU: leaving the flag out on a GPU machine would let it abort, while the flag
    on a TPU machine is only unneeded."""
    if glob.glob("/dev/nvidia[0-9]*"):
        return False
    if os.environ.get("TPU_ACCELERATOR_TYPE") or os.environ.get("TPU_NAME"):
        return True
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def keep_cudnn_out_of_command_buffers() -> bool:
    """Adds ``CUDNN_OUTSIDE_COMMAND_BUFFERS`` to ``XLA_FLAGS`` (before JAX starts its GPU
    backend) unless ``XLA_FLAGS`` already sets ``xla_gpu_enable_command_buffer``: the user's
    choice stands. Returns whether it added the flag."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_enable_command_buffer" in flags:
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + CUDNN_OUTSIDE_COMMAND_BUFFERS).strip()
    return True


def create_runtime(*, strategy: str, tpu: str | None, cpu_replicas: int, jit_compile: bool) -> Runtime:
    """Builds the ``Runtime`` for the current Keras backend.

    Raises:
        ValueError: for an unknown strategy, or a GPU strategy without a GPU.
    """
    import keras

    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r} not in {STRATEGIES}")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_runtime(strategy, tpu, cpu_replicas, jit_compile)
    if backend == "jax":
        return _jax_runtime(strategy, cpu_replicas, jit_compile)
    raise ValueError(f"KERAS_BACKEND={backend!r} is not supported; use tensorflow or jax")


def _tf_runtime(strategy: str, tpu: str | None, cpu_replicas: int, jit_compile: bool) -> Runtime:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if strategy == "auto":
        strategy = "tpu" if tpu else ("gpu" if gpus else "cpu")
    if strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        if tpu and tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        s = tf.distribute.TPUStrategy(resolver)
        return Runtime(
            "tensorflow",
            s,
            s.num_replicas_in_sync,
            1,
            0,
            jit_compile,
            f"TPUStrategy ({tpu or 'local'})",
            "tpu",
            bf16=True,
        )
    if strategy == "gpu":
        if not gpus:
            raise ValueError("--strategy gpu: TensorFlow sees no GPU")
        s = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        n = len(gpus)
        details = tf.config.experimental.get_device_details(gpus[0])
        bf16 = gpu_has_bf16(details.get("compute_capability"))
        name = details.get("device_name", "")
        return Runtime(
            "tensorflow", s, n, 1, 0, jit_compile, f"{n} GPU(s)", "gpu", bf16=bf16, device_name=name
        )
    tf.config.set_visible_devices([], "GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        s = tf.distribute.MirroredStrategy(devices)
        if jit_compile:
            # XLA fails on cross-device variables of logical CPU devices (Keras 3.15, TF 2.21).
            logger.info("jit_compile is off: MirroredStrategy over logical CPU devices does not support it")
        return Runtime(
            "tensorflow", s, cpu_replicas, 1, 0, False, f"MirroredStrategy over {cpu_replicas} CPU devices"
        )
    return Runtime("tensorflow", None, 1, 1, 0, jit_compile, "CPU")


def _jax_runtime(strategy: str, cpu_replicas: int, jit_compile: bool) -> Runtime:
    import jax
    import keras

    if strategy == "tpu":
        # Multi-host pods: every host joins before any device is touched.
        keras.distribution.initialize()
    try:
        devices = jax.devices(None if strategy == "auto" else strategy)
    except (RuntimeError, AssertionError) as e:
        platforms = os.environ.get("JAX_PLATFORMS")
        raise ValueError(
            f"--strategy {strategy}: JAX has no usable {'device' if strategy == 'auto' else strategy + ' device'}"
            + (f" (JAX_PLATFORMS={platforms})" if platforms else "")
            + f": {type(e).__name__}: {e}"
        ) from e
    if cpu_replicas > 1 and len(devices) != cpu_replicas:
        raise ValueError(
            f"--cpu_replicas {cpu_replicas}: JAX sees {len(devices)} devices (set XLA_FLAGS before start)"
        )
    if len(devices) > 1 or jax.process_count() > 1:
        # The input pipeline shards files per host itself, hence no auto-sharding.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        )
    platform = devices[0].platform
    return Runtime(
        "jax",
        None,
        len(devices),
        jax.process_count(),
        jax.process_index(),
        True,  # JAX always compiles the step
        f"JAX {platform} x{len(devices)} over {jax.process_count()} host(s)",
        platform,
        bf16=platform == "tpu"
        or (platform == "gpu" and gpu_has_bf16(getattr(devices[0], "compute_capability", None))),
        device_name=getattr(devices[0], "device_kind", ""),
    )


def mirrored_multi_step(model) -> bool:
    """Whether ``model`` needs ``mirrored_step_function`` in place of Keras' own step loop.

    Keras 3.15's TensorFlow trainer runs ``steps_per_execution`` > 1 as a ``tf.while_loop``
    whose body calls each step inside a ``tf.cond``; under ``MirroredStrategy`` the optimizer's
    cross-replica ``merge_call`` in that branch fails at run time ("You must feed a value for
    placeholder tensor ..."), with any model and optimizer.
    """
    import keras

    if keras.backend.backend() != "tensorflow" or model.steps_per_execution <= 1:
        return False
    import tensorflow as tf

    return isinstance(model.distribute_strategy, tf.distribute.MirroredStrategy)


def mirrored_step_function(model, step, *, in_graph: bool):
    """A Keras ``train_function``/``test_function`` for ``MirroredStrategy`` that runs
    ``model.steps_per_execution`` steps per call without ``tf.cond``.

    ``in_graph=True`` (training, on data that repeats): the steps are one compiled
    ``tf.range`` loop, as TF-Keras ran them. ``in_graph=False`` (evaluation, on data that ends):
    a Python loop of one-step calls that stops where the data does, as Keras does. Python
    batches (``train_on_batch``, ``test_on_batch``) always take the Python loop.
    """
    import itertools

    import tensorflow as tf
    from keras.src.backend.tensorflow.trainer import reduce_per_replica

    strategy = model.distribute_strategy
    steps = model.steps_per_execution

    def one_step(data):
        outputs = strategy.run(step, args=(data,))
        return reduce_per_replica(outputs, strategy, reduction="auto")

    one_step = tf.function(one_step, reduce_retracing=True, jit_compile=model.jit_compile)

    @tf.function(reduce_retracing=True)
    def run_steps(iterator):
        outputs = one_step(next(iterator))
        for _ in tf.range(steps - 1):
            outputs = one_step(next(iterator))
        return outputs

    def is_dataset_iterator(iterator) -> bool:
        return isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator))

    def run_steps_until_the_end(iterator):
        outputs = None
        if is_dataset_iterator(iterator):
            for _ in range(steps):
                data = iterator.get_next_as_optional()
                if not data.has_value():
                    break
                outputs = one_step(data.get_value())
        else:  # Python batches (train_on_batch, test_on_batch), as Keras runs them
            for data in itertools.islice(iterator, steps):
                outputs = one_step(data)
        if outputs is None:
            raise StopIteration
        return outputs

    def run(iterator):
        if in_graph and is_dataset_iterator(iterator):
            return run_steps(iterator)
        return run_steps_until_the_end(iterator)

    return run
