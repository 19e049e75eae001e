"""Compile the trainer's JAX train step for an NVIDIA GPU on a machine without one, and rank what
XLA made of it: memory, kernels, and the bytes each kind of kernel moves.

No GPU runs anything: JAX stays on its CPU backend, the CUDA plugin only provides a
compile-only device described by XLA's target-config spec of the card, and the step is
compiled for that device from shapes alone (the same program ``benchmarks.gpu_bench`` times,
minus autotuning: without a device XLA keeps its default choice between Triton and cuBLAS for
each matrix product). It answers, before any GPU time is spent, what a change does to the GPU
program: XLA's temporaries (activations kept for the backward pass; on an H100 this matched
the measured peak, 16.21 against 16.2 GiB), how many kernels run, and which ones move the bytes.

Setup, once, in an environment of its own (the project's pins JAX 0.10.2 and no CUDA plugin;
the GPU machine runs 0.11.2), and the card's spec from XLA's repository
(openxla/xla, ``xla/backends/gpu/target_config/specs/h100_sxm.txtpb``) saved locally::

    python3 -m venv /tmp/gpu_aot
    /tmp/gpu_aot/bin/pip install jax==0.11.2 jaxlib==0.11.2 jax-cuda12-plugin==0.11.2 \\
        jax-cuda12-pjrt==0.11.2 keras==3.15.1

Run from the repository root::

    PYTHONPATH=. /tmp/gpu_aot/bin/python -m benchmarks.gpu_compile --target_config h100_sxm.txtpb \\
        --runs keras_jax,keras_jax_threefry,keras_jax_keras_gelu --out /tmp/gpu_compile

Runs are ``benchmarks.trainer_common.RUNS`` names of the ``keras_jax`` kind; ``attention_impl``
``auto`` becomes ``cudnn`` (what the trainer's probe picks on an H100 in bf16). Each run
compiles in its own process and leaves ``<out>/<run>.hlo.txt`` (the optimised program) and a
row in ``<out>/gpu_compile.json``. A run's own XLA flags apply (``keras_jax_cublas``,
``keras_jax_gelu_tanh``); ``--xla_flags`` adds more to every run
(``--xla_gpu_enable_triton_gemm=false`` puts every matrix product on cuBLAS). The ranking
alone, for any optimised HLO text (also a GPU dump)::

    python -m benchmarks.gpu_compile --rank FILE.hlo.txt
    python -m benchmarks.gpu_compile --rank FILE.hlo.txt --sequence   # every kernel, in order

Bytes of a kernel are its operands' plus its output's sizes: an upper estimate (a kernel that
reads a slice of an operand is charged all of it).

Pallas kernels (``trainer.pallas``, the runs ``keras_jax_pallas_*``) are lowered for the card too: Pallas asks
the device for its compute capability, which this script answers from the spec's device kind.

``--devices N`` compiles the step for N cards of the spec's kind, data parallel as the
trainer's ``keras.distribution.DataParallel``: the batch split over them, the state
replicated. Each row then also counts the collectives (all-reduce and the like) and their
bytes per step, with those that a loop runs more than once apart (gradient accumulation:
``--runs keras_jax,keras_jax_accum4 --devices 2``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
}
_DTYPE_BYTES.update({"s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5, "token": 0})
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_KERNELS = ("fusion", "copy", "transpose", "custom-call")
RESULT_PREFIX = "GPU_COMPILE_RESULT "


def shape_bytes(shape: str) -> float:
    """Bytes of every array in an HLO shape text (a tuple counts all its elements)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype.startswith("f8"):
            size = 1
        elif dtype in _DTYPE_BYTES:
            size = _DTYPE_BYTES[dtype]
        else:
            raise ValueError(f"unknown element type {dtype!r} in the HLO shape {shape!r}")
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * size
    return total


def _computations(text: str) -> tuple[dict[str, list[str]], str | None]:
    comps, entry, name = {}, None, None
    for line in text.splitlines():
        if not line.startswith((" ", "}")) and line.rstrip().endswith("{"):
            m = re.match(r"^(ENTRY )?%?([\w.\-]+)", line)
            if m:
                name = m.group(2)
                comps[name] = []
                entry = name if m.group(1) else entry
                continue
        if line.startswith("}"):
            name = None
        elif name is not None and line.strip():
            comps[name].append(line)
    return comps, entry


def _instruction(line: str):
    """``(name, shape, opcode, operand names, text after the operands)`` of one HLO line."""
    m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$", line)
    if not m:
        return None
    name, rest = m.groups()
    depth, i = 0, 0
    while i < len(rest) and not (rest[i] == " " and depth == 0):  # the shape ends at a top-level space
        depth += (rest[i] in "([{") - (rest[i] in ")]}")
        i += 1
    shape, tail = rest[:i], rest[i:].lstrip()
    m = re.match(r"([a-z][\w\-]*)\(", tail)
    if not m:
        return None
    j, depth = m.end(), 1
    while j < len(tail) and depth:
        depth += (tail[j] == "(") - (tail[j] == ")")
        j += 1
    return name, shape, m.group(1), re.findall(r"%([\w.\-]+)", tail[m.end() : j - 1]), tail[j:]


def _walk(text: str):
    """Every instruction reached from the entry computation through while loops (run
    ``known_trip_count`` times, once when XLA does not know it), calls (command buffers), async
    wrappers and conditionals (every branch, an upper estimate), not those inside a fusion, in
    program order: ``(name, shape, opcode, operand names, attributes, runs, shapes)``, ``shapes``
    the output shape of each instruction of its computation by name."""
    comps, entry = _computations(text)
    if entry is None:
        raise ValueError("no ENTRY computation: not the text of an HLO module")

    def visit(comp: str, runs: int):
        parsed = [i for i in map(_instruction, comps.get(comp, [])) if i]
        shapes = {i[0]: i[1] for i in parsed}
        for name, shape, op, operands, attrs in parsed:
            if op == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', attrs)
                body = re.search(r"\bbody=%?([\w.\-]+)", attrs)
                if body:
                    yield from visit(body.group(1), runs * (int(trips.group(1)) if trips else 1))
                continue
            if op in ("call", "async-start", "conditional"):
                called = re.findall(r"(?:to_apply|calls)=%?([\w.\-]+)", attrs)
                branches = re.search(r"branch_computations=\{([^}]*)\}", attrs)
                called += re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
                for computation in called:
                    yield from visit(computation, runs)
                continue
            yield name, shape, op, operands, attrs, runs, shapes

    yield from visit(entry, 1)


def kernels(text: str) -> list[dict]:
    """Every kernel of an optimised HLO module, in program order.

    Kernels are the fusions, copies, transposes and custom calls that ``_walk`` reaches (not the
    computations inside a fusion). Each: ``name``; ``group`` (the name without its numeric
    suffix, or ``custom-call <target>``, then a Pallas kernel's name); ``shape`` (the
    output's, layouts dropped); ``bytes`` per run (the distinct operands + the outputs);
    ``runs`` per execution of the module;
    ``source`` (the ``op_name`` of its metadata: which layer and operation of the traced
    program it comes from, "" when absent).
    """
    found: list[dict] = []
    for name, shape, op, operands, attrs, runs, shapes in _walk(text):
        if op not in _KERNELS:
            continue
        if op == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', attrs)
            group = f"custom-call {target.group(1) if target else '?'}"
            kernel = re.search(r'\bname = "([^"]+)"', attrs)  # a Pallas kernel's name
            if kernel and "triton" in group:
                group = f"{group} {kernel.group(1)}"
        else:
            group = re.sub(r"(\.\d+)+$", "", name)
        inputs = sum(shape_bytes(shapes.get(o, "")) for o in dict.fromkeys(operands))
        found.append(
            {
                "name": name,
                "group": group,
                "shape": re.sub(r"\{[^{}]*\}", "", shape),
                "bytes": shape_bytes(shape) + inputs,
                "runs": runs,
                "source": _source(attrs),
            }
        )
    return found


def _source(attrs: str) -> str:
    found = re.search(r'op_name="([^"]*)"', attrs)
    return found.group(1) if found else ""


_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(text: str) -> list[dict]:
    """Every collective of an optimised HLO module (all-reduce, all-gather, reduce-scatter,
    all-to-all, collective-permute; the ``-start`` of an asynchronous one, or a fusion that
    wraps one), in program order: ``name``, ``op``, ``bytes`` (its operands), ``runs`` per
    execution of the module (a collective in a while loop's body runs once per iteration)
    and ``source``."""
    found: list[dict] = []
    for name, _, op, operands, attrs, runs, shapes in _walk(text):
        kind = op.removesuffix("-start")
        if kind not in _COLLECTIVES:
            called = re.search(r"calls=%?([\w.\-]+)", attrs)
            wrapped = [c for c in _COLLECTIVES if called and c in called.group(1)]
            if op not in ("fusion", "fusion-start") or not wrapped:
                continue
            kind = wrapped[0]
        inputs = sum(shape_bytes(shapes.get(o, "")) for o in dict.fromkeys(operands))
        found.append({"name": name, "op": kind, "bytes": inputs, "runs": runs, "source": _source(attrs)})
    return found


def rank(text: str) -> list[dict]:
    """``kernels`` grouped, most bytes first, per execution of the module: each group's
    ``count`` (runs), ``bytes`` (summed over its runs) and ``shape`` (its most common output
    shape)."""
    groups: dict[str, dict] = {}
    for k in kernels(text):
        g = groups.setdefault(
            k["group"], {"group": k["group"], "count": 0, "bytes": 0, "shapes": collections.Counter()}
        )
        g["count"] += k["runs"]
        g["bytes"] += k["runs"] * k["bytes"]
        g["shapes"][k["shape"]] += k["runs"]
    ranked = sorted(groups.values(), key=lambda g: -g["bytes"])
    for g in ranked:
        g["shape"] = g.pop("shapes").most_common(1)[0][0]
    return ranked


def summarize(text: str) -> dict:
    """Totals of ``rank``: kernels, bytes, and those of matrix products and attention kernels
    (cuDNN's, and trainer.pallas.attention's) apart."""
    groups = rank(text)

    def total(select) -> dict:
        chosen = [g for g in groups if select(g["group"])]
        return {"kernels": sum(g["count"] for g in chosen), "gb": sum(g["bytes"] for g in chosen) / 1e9}

    def is_gemm(group: str) -> bool:  # XLA's products, cuBLAS' and Pallas' (trainer.pallas.ffn)
        return "gemm" in group or "cublas" in group or "matmul" in group

    def is_attention(group: str) -> bool:
        return "cudnn" in group or "triton attention_" in group

    return {
        "all": total(lambda g: True),
        "matrix_products": total(is_gemm),
        "attention": total(is_attention),
        "other": total(lambda g: not is_gemm(g) and not is_attention(g)),
        "groups": [{**g, "gb": g.pop("bytes") / 1e9} for g in groups],
    }


def run_overrides(run: str) -> dict:
    """The overrides of a ``benchmarks.trainer_common.RUNS`` run this script can compile."""
    from benchmarks import trainer_common

    known = sorted(name for name, (kind, _) in trainer_common.RUNS.items() if kind == "keras_jax")
    if run not in known:
        raise ValueError(f"run {run!r} is not a keras_jax run; known: {', '.join(known)}")
    return trainer_common.RUNS[run][1]


def compile_run(run: str, args) -> dict:
    """Compiles one run's train step for the target GPU (in this process; sets up JAX first)."""
    from trainer.distribute import CUDNN_OUTSIDE_COMMAND_BUFFERS

    overrides = dict(run_overrides(run))  # a copy: xla_flags is popped below
    if "attention" not in overrides.get("pallas_kernels", ()):  # the Pallas attention takes its place
        overrides = {"attention_impl": "cudnn", **overrides}
    os.environ.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1")
    # The run's own flags (keras_jax_cublas, keras_jax_gelu_tanh), then --xla_flags'.
    flags = (CUDNN_OUTSIDE_COMMAND_BUFFERS, overrides.pop("xla_flags", ""), args.xla_flags)
    os.environ["XLA_FLAGS"] = " ".join(f for f in flags if f)
    sys.modules["tensorflow"] = None  # as on the GPU machine
    import jax
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention
    from jax.experimental import topologies

    from benchmarks import trainer_common

    # No device to ask: the card's cuDNN and compute capability are taken as an H100's.
    cudnn_attention.check_cudnn_version = lambda: 91000
    cudnn_attention.check_compute_capability = lambda capability: True
    cudnn_attention.is_cuda_compute_capability_equal = lambda capability: False
    with open(args.target_config) as f:
        try:
            topology = topologies.get_topology_desc(
                platform="cuda", target_config=f.read(), topology=f"1x1x{args.devices}"
            )
        except NotImplementedError as e:
            raise RuntimeError(
                f"JAX {jax.__version__} has no CUDA plugin to compile with ({e}); install "
                "jax-cuda12-plugin and jax-cuda12-pjrt of the same version (this module's docstring)"
            ) from e
    devices = topology.devices
    try:  # Pallas' Triton lowering asks the device for its compute capability: none here
        from jax._src.pallas.triton import gpu_info, pallas_call_registration

        from trainer.pallas import attention, ffn, norm

        card = gpu_info.get_gpu_info_from_version(
            gpu_info.gpu_version_from_device_kind(devices[0].device_kind)
        )
        pallas_call_registration.gpu_info_lib.get_gpu_info = lambda: card
        norm.interpret = ffn.interpret = attention.interpret = False
    except (ImportError, AttributeError, ValueError) as e:
        print(f"Pallas kernels cannot be lowered here ({e})", file=sys.stderr)
    spec = trainer_common.BenchSpec(
        run=run, size=args.size, vocab_size=args.vocab_size, batch_size=args.batch_size,
        seq_length=args.seq_length, max_predictions=args.max_predictions, steps=1, warmup=1,
        device="gpu", precision="bf16", torch_compile=False, peak_tflops=None,
    )  # fmt: skip
    config, model = trainer_common._keras_setup(spec, overrides, probe=False)
    model.optimizer.build(model.trainable_variables)
    state = tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    )
    # Data parallel, as the trainer's keras.distribution.DataParallel on several GPUs: the
    # state replicated, the batch split over the devices along its first axis.
    mesh = jax.sharding.Mesh(devices, ("batch",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    batch = trainer_common._batches(spec, count=1)[0]
    start = time.perf_counter()
    traced = jax.jit(model.train_step, donate_argnums=0, out_shardings=replicated).trace(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state),
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=split), batch),
    )
    compiled = traced.lower(lowering_platforms=("cuda",)).compile()
    compile_s = time.perf_counter() - start
    text = compiled.as_text()
    with open(os.path.join(args.out, f"{run}.hlo.txt"), "w") as f:
        f.write(text)
    memory = compiled.memory_analysis()
    options = model.kernel_options
    return {
        "run": run,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "kernel_options": {  # with the generator auto settles on (older trees have no auto)
            **dataclasses.asdict(options),
            "dropout_rng": options.dropout_for("jax")
            if hasattr(options, "dropout_for")
            else options.dropout_rng,
        },
        "model_config": dataclasses.asdict(config),
        "batch_size": args.batch_size,
        "seq_length": args.seq_length,
        "xla_flags": os.environ["XLA_FLAGS"],
        "versions": {"jax": jax.__version__},
        "compile_s": compile_s,
        "temp_gib": memory.temp_size_in_bytes / 2**30,
        "argument_gib": memory.argument_size_in_bytes / 2**30,
        **summarize(text),
        "collectives": collective_totals(text),
    }


def collective_totals(text: str) -> dict:
    """``collectives`` per execution: ``count`` and ``gb`` in all, and ``looped_gb``, the bytes
    of those in a loop's body that run more than once (e.g. once per micro-batch)."""
    found = collectives(text)
    return {
        "count": sum(c["runs"] for c in found),
        "gb": sum(c["runs"] * c["bytes"] for c in found) / 1e9,
        "looped_gb": sum(c["runs"] * c["bytes"] for c in found if c["runs"] > 1) / 1e9,
    }


def table(results: list[dict]) -> str:
    rows = [
        f"{'run':<26} {'temp GiB':>8} {'kernels':>7} {'GB all':>7} {'GB matmul':>9} {'GB attention':>12} "
        f"{'GB other':>8} {'other kernels':>13} {'GB collectives (looped)':>23}"
    ]
    for r in results:
        if "error" in r:
            rows.append(f"{r['run']:<26} ERROR {r['error']}")
            continue
        rows.append(
            f"{r['run']:<26} {r['temp_gib']:>8.2f} {r['all']['kernels']:>7} {r['all']['gb']:>7.1f} "
            f"{r['matrix_products']['gb']:>9.1f} {r['attention']['gb']:>12.1f} {r['other']['gb']:>8.1f} "
            f"{r['other']['kernels']:>13} {_collective_cell(r.get('collectives')):>23}"
        )
    return "\n".join(rows)


def _collective_cell(totals: dict | None) -> str:
    if not totals or not totals["count"]:
        return "-"
    return f"{totals['gb']:.3f} ({totals['looped_gb']:.3f})"


def _read_hlo(path: str, parse):
    """``parse`` of the HLO text at ``path``; exits naming the file when it is not HLO."""
    with open(path) as f:
        try:
            return parse(f.read())
        except ValueError as e:
            raise SystemExit(f"{path}: {e}") from e


def _print_rank(path: str, top: int) -> None:
    s = _read_hlo(path, summarize)
    print(f"{'group':<60} {'count':>5} {'GB':>8}  most common output shape")
    for g in s["groups"][:top]:
        print(f"{g['group'][:60]:<60} {g['count']:>5} {g['gb']:>8.3f}  {g['shape'][:80]}")
    print(f"{'total':<60} {s['all']['kernels']:>5} {s['all']['gb']:>8.3f}")


def _print_sequence(path: str, min_mb: float) -> None:
    found = _read_hlo(path, kernels)
    shown = 0
    for i, k in enumerate(found):
        if k["bytes"] / 1e6 < min_mb:
            continue
        shown += 1
        runs = f" x{k['runs']}" if k["runs"] > 1 else ""
        print(
            f"{i:>5} {k['bytes'] / 1e6:>9.1f} MB{runs:<5} {k['name'][:40]:<40} {k['shape'][:60]:<60} {k['source'][-90:]}"
        )
    print(f"{shown} of {len(found)} kernels at {min_mb} MB or more")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target_config", help="XLA's GpuTargetConfigProto text of the card (h100_sxm.txtpb)"
    )
    parser.add_argument("--runs", default="keras_jax,keras_jax_threefry,keras_jax_keras_gelu")
    parser.add_argument("--size", default="base")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--xla_flags", default="", help="more XLA flags for every run")
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="GPUs of the card's kind, data parallel: the batch split over them, the state replicated",
    )
    parser.add_argument("--out", default="/tmp/gpu_compile")
    parser.add_argument("--rank", metavar="HLO_TXT", help="only rank the kernels of this optimised HLO text")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--sequence",
        action="store_true",
        help="with --rank: list the kernels in program order (bytes, output shape, source operation)",
    )
    parser.add_argument("--min_mb", type=float, default=1.0, help="with --sequence: skip smaller kernels")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sequence and not args.rank:
        parser.error("--sequence lists the kernels of --rank HLO_TXT; give that file")
    if args.rank:
        if args.sequence:
            _print_sequence(args.rank, args.min_mb)
        else:
            _print_rank(args.rank, args.top)
        return 0
    if not args.target_config:
        parser.error("--target_config is required to compile")
    if not os.path.isfile(args.target_config):
        parser.error(f"--target_config {args.target_config}: no such file")
    if args.devices < 1 or args.batch_size % args.devices:
        parser.error(f"--devices {args.devices} must be 1 or more and divide --batch_size {args.batch_size}")
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(compile_run(args.worker, args)), flush=True)
        return 0
    runs = [run for run in args.runs.split(",") if run]
    for run in runs:
        try:
            steps = run_overrides(run).get("gradient_accumulation_steps", 1)
        except ValueError as e:
            parser.error(f"--runs: {e}")
        if args.batch_size % (args.devices * steps):
            parser.error(
                f"--batch_size {args.batch_size} must divide by --devices {args.devices} times run {run}'s "
                f"{steps} micro-batches"
            )
    results = []
    for run in runs:
        print(f"=== {run}", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.gpu_compile", *(argv or sys.argv[1:]), "--worker", run]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            results.append({"run": run, "error": f"exit {proc.returncode}: {' | '.join(tail)}"})
        else:
            results.append(json.loads(lines[-1][len(RESULT_PREFIX) :]))
        with open(os.path.join(args.out, "gpu_compile.json"), "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))
    print(f"JSON: {os.path.join(args.out, 'gpu_compile.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
