"""benchmarks/step_profile.py: device events picked from JAX (Perfetto) and PyTorch (Chrome)
traces, summed per kernel and per kind."""

from __future__ import annotations

import pytest

from benchmarks import step_profile


def _meta(pid, name, tid=None, what="process_name"):
    return {"ph": "M", "pid": pid, "tid": tid, "name": what, "args": {"name": name}}


def test_perfetto_trace_keeps_the_gpu_process_events_only():
    trace = {
        "traceEvents": [
            _meta(1, "/host:CPU"),
            _meta(2, "/device:GPU:0 (NVIDIA H100 80GB HBM3)"),
            {"ph": "X", "pid": 1, "tid": 7, "name": "PjitFunction(train_step)", "dur": 9000.0},
            {"ph": "X", "pid": 2, "tid": 1, "name": "gemm_fusion_dot.3", "dur": 300.0},
            {"ph": "X", "pid": 2, "tid": 1, "name": "cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "dur": 100.0},
            {"ph": "X", "pid": 2, "tid": 1, "name": "loop_add_fusion", "dur": 50.0},
            {"ph": "X", "pid": 2, "tid": 1, "name": "gemm_fusion_dot.3", "dur": 300.0},
            {"ph": "X", "pid": 2, "tid": 2, "name": "MemcpyD2D", "dur": 10.0},
            {"ph": "i", "pid": 2, "tid": 1, "name": "marker"},
        ]
    }
    events, source = step_profile.device_events(trace)
    assert source == "device"
    assert sorted(events) == sorted(
        [
            ("gemm_fusion_dot.3", 300.0),
            ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", 100.0),
            ("loop_add_fusion", 50.0),
            ("gemm_fusion_dot.3", 300.0),
            ("MemcpyD2D", 10.0),
        ]
    )
    summary = step_profile.summarize(events, steps=2, source=source, top=2)
    assert summary["kernel_ms_per_step"] == pytest.approx(0.38)
    assert summary["events_per_step"] == 2.5
    assert {k: round(v["ms_per_step"], 6) for k, v in summary["kinds"].items()} == {
        "matmul": 0.3,
        "attention": 0.05,
        "fusion/elementwise": 0.025,
        "copy": 0.005,
    }
    assert list(summary["kinds"]) == ["matmul", "attention", "fusion/elementwise", "copy"]  # largest first
    assert summary["kinds"]["matmul"]["share"] == pytest.approx(600 / 760)
    assert summary["top"] == [
        {"name": "gemm_fusion_dot.3", "kind": "matmul", "ms_per_step": 0.3, "calls_per_step": 1.0},
        {
            "name": "cudnn_generated_fort_native_sdpa_sm90_flash_fprop",
            "kind": "attention",
            "ms_per_step": 0.05,
            "calls_per_step": 0.5,
        },
    ]


def test_torch_trace_keeps_kernel_and_copy_categories():
    trace = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 40.0, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "dur": 4.0, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "kernel", "name": "sm90_xmma_gemm_bf16bf16_bf16f32", "dur": 20.0, "pid": 0, "tid": 7},
        {"ph": "X", "cat": "kernel", "name": "triton_poi_fused_add_gelu_0", "dur": 5.0, "pid": 0, "tid": 7},
        {"ph": "X", "cat": "kernel", "name": "pytorch_flash::flash_fwd_kernel", "dur": 8.0, "pid": 0, "tid": 7},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "dur": 1.0, "pid": 0, "tid": 7},
        {"ph": "X", "cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel", "dur": 2.0},
        {"ph": "X", "cat": "kernel", "name": "nccl_unknown", "dur": 3.0},
    ]
    events, source = step_profile.device_events(trace)
    assert source == "device" and len(events) == 6
    kinds = step_profile.summarize(events, steps=1)["kinds"]
    assert {k: v["ms_per_step"] for k, v in kinds.items()} == pytest.approx(
        {"matmul": 0.02, "attention": 0.008, "triton": 0.005, "other": 0.003, "fusion/elementwise": 0.002, "copy": 0.001}
    )


def test_without_device_events_the_xla_host_threads_stand_in():
    trace = {
        "traceEvents": [
            _meta(701, "/host:CPU"),
            _meta(701, "python", tid=1, what="thread_name"),
            _meta(701, "tf_XLAPjRtCpuClient/123", tid=2, what="thread_name"),
            {"ph": "X", "pid": 701, "tid": 1, "name": "PjitFunction(f)", "dur": 500.0},
            {"ph": "X", "pid": 701, "tid": 2, "name": "dot_fusion", "dur": 200.0},
        ]
    }
    events, source = step_profile.device_events(trace)
    assert events == [("dot_fusion", 200.0)]
    assert source.startswith("host XLA threads")


def test_summary_refuses_zero_steps():
    with pytest.raises(ValueError, match="steps must be > 0, got 0"):
        step_profile.summarize([], steps=0)
