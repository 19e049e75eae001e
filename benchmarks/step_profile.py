"""Where a train step's device time goes: a few profiled steps, summed per kernel and per kind.

After a benchmark run has been timed, ``profile_jax`` (``jax.profiler``, Perfetto trace) or
``profile_torch`` (``torch.profiler``, Chrome trace) records ``steps`` more steps; both traces
are Chrome-trace JSON, read here by the same ``summarize``. Device events are the GPU kernels,
copies and memsets (Perfetto: events of a ``/device:GPU:N`` process; PyTorch: events of category
``kernel``, ``gpu_memcpy``, ``gpu_memset``). On a CPU run there are none; the XLA CPU client's
worker threads stand in (``source`` says which), so the code path is testable anywhere; host
events nest (an operator holds the ones it calls), so their sums exceed the step time.

The summary: kernel time per step (compare it with the step time: the rest is the device
waiting for the host or for launches), the share of each kind (matrix products, fused
attention, other fusions, copies), and the kernels that take most time.

Kinds are guessed from kernel names (cuBLAS/CUTLASS ``gemm``/``xmma``/``nvjet``, cuDNN and
flash attention ``fmha``/``flash``/``sdpa``, Triton, XLA fusions and PyTorch's elementwise
kernels); ``other`` holds what matches none.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import shutil
import tempfile

KINDS = (
    ("attention", re.compile(r"fmha|flash|sdpa|attention|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|cublas|xmma|nvjet|matmul|\bdot|\b(add|b)?mm\b", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose", re.I)),
    ("triton", re.compile(r"triton", re.I)),
    (
        "fusion/elementwise",
        re.compile(r"fusion|loop_|input_|reduce|elementwise|vectorized|kernel|residual_norm", re.I),
    ),
)
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
_DEVICE_PROCESS = re.compile(r"/device:(GPU|TPU)", re.I)
_HOST_XLA_THREAD = re.compile(r"^tf_XLA|XLAPjRt|XLAEigen")


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if pattern.search(name):
            return label
    return "other"


def device_events(trace) -> tuple[list[tuple[str, float]], str]:
    """``([(name, duration_us)], source)`` of the device's complete events in a Chrome trace."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e.get("pid")] = str(e.get("args", {}).get("name", ""))
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e.get("pid"), e.get("tid"))] = str(e.get("args", {}).get("name", ""))
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    device = [
        e
        for e in complete
        if e.get("cat") in DEVICE_CATEGORIES or _DEVICE_PROCESS.search(processes.get(e.get("pid"), ""))
    ]
    if device:
        return [(e["name"], float(e["dur"])) for e in device], "device"
    host = [e for e in complete if _HOST_XLA_THREAD.search(threads.get((e.get("pid"), e.get("tid")), ""))]
    return [(e["name"], float(e["dur"])) for e in host], "host XLA threads (no device events; nested)"


def summarize(events: list[tuple[str, float]], *, steps: int, source: str = "device", top: int = 20) -> dict:
    """Per-step kernel time, shares by kind, and the ``top`` kernels by total time.

    Args:
        events: ``(name, duration_us)`` of every device event of ``steps`` steps.
        steps: how many steps the events cover.
        source: where the events came from (recorded as is).
        top: how many kernels to list.
    """
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    total_us = sum(d for _, d in events)
    by_name = collections.defaultdict(lambda: [0.0, 0])
    by_kind = collections.defaultdict(float)
    for name, dur in events:
        by_name[name][0] += dur
        by_name[name][1] += 1
        by_kind[kind(name)] += dur
    ranked = sorted(by_name.items(), key=lambda item: (-item[1][0], item[0]))[:top]
    return {
        "source": source,
        "steps": steps,
        "events_per_step": len(events) / steps,
        "kernel_ms_per_step": total_us / steps / 1e3,
        "kinds": {
            k: {"ms_per_step": v / steps / 1e3, "share": v / total_us if total_us else 0.0}
            for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {
                "name": name[:120],
                "kind": kind(name),
                "ms_per_step": us / steps / 1e3,
                "calls_per_step": calls / steps,
            }
            for name, (us, calls) in ranked
        ],
    }


def _load(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def _keep(path: str, keep_dir: str | None, name: str) -> str | None:
    if not keep_dir:
        return None
    os.makedirs(keep_dir, exist_ok=True)
    dest = os.path.join(keep_dir, name)
    shutil.copyfile(path, dest)
    return dest


def profile_jax(
    step, sync, *, first: int, steps: int, keep_dir: str | None = None, name: str = "jax"
) -> dict:
    """Profiles ``step(first)`` .. ``step(first + steps - 1)`` with ``jax.profiler``."""
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            out = None
            for i in range(first, first + steps):
                out = step(i)
            sync(out)
        paths = sorted(glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True))
        if not paths:
            return {"error": "jax.profiler wrote no perfetto_trace.json.gz"}
        events, source = device_events(_load(paths[-1]))
        summary = summarize(events, steps=steps, source=source)
        summary["trace"] = _keep(paths[-1], keep_dir, f"{name}.perfetto_trace.json.gz")
    return summary


def profile_torch(
    step, sync, *, first: int, steps: int, keep_dir: str | None = None, name: str = "torch"
) -> dict:
    """Profiles ``step(first)`` .. ``step(first + steps - 1)`` with ``torch.profiler``."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with tempfile.TemporaryDirectory() as tmp:
        with torch.profiler.profile(activities=activities) as prof:
            out = None
            for i in range(first, first + steps):
                out = step(i)
            sync(out)
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        trace = _load(path)
        events, source = device_events(trace)
        if source != "device":  # a CPU run: PyTorch's own operators stand in
            ops = trace["traceEvents"] if isinstance(trace, dict) else trace
            events = [(e["name"], float(e["dur"])) for e in ops if e.get("cat") == "cpu_op" and "dur" in e]
            source = "host operators (no device events; nested)"
        summary = summarize(events, steps=steps, source=source)
        if keep_dir:
            gz = path + ".gz"
            with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
                shutil.copyfileobj(src, dst)
            summary["trace"] = _keep(gz, keep_dir, f"{name}.chrome_trace.json.gz")
        else:
            summary["trace"] = None
    return summary


def format_summary(run: str, summary: dict, step_ms: float | None = None) -> str:
    """A few lines for the log: kernel time against the step time, kinds, the top kernels."""
    if "error" in summary:
        return f"{run}: profile error: {summary['error']}"
    head = f"{run}: {summary['kernel_ms_per_step']:.2f} ms of kernels per step"
    if step_ms:
        head += f" (step {step_ms:.2f} ms)"
    head += f", {summary['events_per_step']:.0f} events per step, {summary['source']}"
    lines = [head]
    lines += [
        f"  {k:<20} {v['ms_per_step']:>8.2f} ms  {100 * v['share']:5.1f}%"
        for k, v in summary["kinds"].items()
    ]
    lines += [
        f"    {t['ms_per_step']:>8.3f} ms  x{t['calls_per_step']:<5g} {t['kind']:<18} {t['name'][:70]}"
        for t in summary["top"][:12]
    ]
    return "\n".join(lines)
