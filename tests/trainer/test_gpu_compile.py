"""``benchmarks.gpu_compile``: the kernel ranking of optimised HLO (the GPU compile itself needs
the CUDA plugin's environment, docs/benchmarks_trainer.md), and the benchmark overrides it
compiles (``benchmarks.trainer_common``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks.gpu_compile import collective_totals, collectives, kernels, main, rank, shape_bytes, summarize

REPO = Path(__file__).resolve().parents[2]

# A GPU-like module: a cuBLAS product, a cuDNN call reading one array twice, fusions in the
# entry computation, in a command buffer (a call) and in a while-loop body run 4 times;
# parameters, tuples and get-tuple-elements are not kernels.
GPU_LIKE = """\
HloModule m, is_scheduled=true

%fused_add (p0: bf16[32,16]) -> bf16[32,16] {
  %p0 = bf16[32,16]{1,0} parameter(0)
  ROOT %a = bf16[32,16]{1,0} add(%p0, %p0)
}

%body (t: (s32[], bf16[32,16])) -> (s32[], bf16[32,16]) {
  %t = (s32[], bf16[32,16]{1,0}) parameter(0)
  %g = bf16[32,16]{1,0} get-tuple-element(%t), index=1
  %i = s32[] get-tuple-element(%t), index=0
  %loop_add_fusion.3 = bf16[32,16]{1,0} fusion(%g), kind=kLoop, calls=%fused_add
  ROOT %r = (s32[], bf16[32,16]{1,0}) tuple(%i, %loop_add_fusion.3)
}

%command_buffer (b0: bf16[32,16]) -> bf16[32,16] {
  %b0 = bf16[32,16]{1,0} parameter(0)
  ROOT %loop_add_fusion.9 = bf16[32,16]{1,0} fusion(%b0), kind=kLoop, calls=%fused_add
}

ENTRY %main (x: bf16[32,8], w: bf16[8,16]) -> bf16[32,16] {
  %x = bf16[32,8]{1,0} parameter(0)
  %w = bf16[8,16]{1,0} parameter(1)
  %mm = (bf16[32,16]{1,0}, s8[1024]{0}) custom-call(%x, %w), custom_call_target="__cublas$lt$matmul"
  %y = bf16[32,16]{1,0} get-tuple-element(%mm), index=0
  %att = (bf16[32,16]{1,0}, u8[0]{0}) custom-call(%y, %y), custom_call_target="__cudnn$fmhaSoftmax"
  %z = bf16[32,16]{1,0} get-tuple-element(%att), index=0
  %loop_add_fusion.1 = bf16[32,16]{1,0} fusion(%z), kind=kLoop, calls=%fused_add
  %loop_add_fusion.2.1 = bf16[32,16]{1,0} fusion(%loop_add_fusion.1), kind=kLoop, calls=%fused_add
  %cb = bf16[32,16]{1,0} call(%loop_add_fusion.2.1), to_apply=%command_buffer
  %c = s32[] constant(0)
  %init = (s32[], bf16[32,16]{1,0}) tuple(%c, %cb)
  %wh = (s32[], bf16[32,16]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT %out = bf16[32,16]{1,0} get-tuple-element(%wh), index=1
}
"""


def test_shape_bytes_counts_every_array_of_a_tuple():
    assert shape_bytes("bf16[256,128,768]{2,1,0}") == 256 * 128 * 768 * 2
    assert shape_bytes("(f32[4,4]{1,0}, pred[10]{0}, s32[])") == 64 + 10 + 4


def test_rank_charges_each_kernel_its_operands_and_outputs():
    groups = {g["group"]: g for g in rank(GPU_LIKE)}
    assert set(groups) == {
        "custom-call __cublas$lt$matmul",
        "custom-call __cudnn$fmhaSoftmax",
        "loop_add_fusion",
    }
    # x (512 B) + w (256 B) in, the product (1,024 B) and the 1,024 B workspace out.
    assert groups["custom-call __cublas$lt$matmul"]["count"] == 1
    assert groups["custom-call __cublas$lt$matmul"]["bytes"] == 512 + 256 + 1024 + 1024
    # Two fusions in the entry, one in the command buffer and 4 runs of the loop body's, each
    # 1,024 B in and 1,024 B out.
    assert groups["loop_add_fusion"] == {
        "group": "loop_add_fusion",
        "count": 7,
        "bytes": 7 * 2048,
        "shape": "bf16[32,16]",
    }
    s = summarize(GPU_LIKE)
    assert s["matrix_products"] == {"kernels": 1, "gb": 2816 / 1e9}
    assert s["attention"] == {"kernels": 1, "gb": (1024 + 1024) / 1e9}  # y read once, though passed twice
    assert s["other"] == {"kernels": 7, "gb": 7 * 2048 / 1e9}
    assert s["all"]["kernels"] == 9


PALLAS_LIKE = """HloModule pallas_like

ENTRY %main (x: bf16[32,8], w: bf16[8,16]) -> bf16[32,16] {
  %x = bf16[32,8]{1,0} parameter(0)
  %w = bf16[8,16]{1,0} parameter(1)
  %pallas_call.7 = (bf16[32,16]{1,0}, bf16[32,16]{1,0}) custom-call(%x, %w), custom_call_target="__gpu$xla.gpu.triton", metadata={op_name="jit(f)/matmul_gelu_forward/pallas_call"}, backend_config={debug = false, grid_x = 1 : i32, ir = "ML\\EFR\\00name", name = "matmul_gelu_forward", num_stages = 3 : i32, num_warps = 8 : i32}
  %h = bf16[32,16]{1,0} get-tuple-element(%pallas_call.7), index=0
  %pallas_call.8 = bf16[32,16]{1,0} custom-call(%h), custom_call_target="__gpu$xla.gpu.triton", backend_config={debug = false, ir = "", name = "residual_norm_forward", num_warps = 8 : i32}
  %pallas_call.9 = bf16[32,16]{1,0} custom-call(%pallas_call.8, %h), custom_call_target="__gpu$xla.gpu.triton", backend_config={debug = false, ir = "", name = "attention_forward", num_warps = 8 : i32}
  ROOT %loop_add_fusion.1 = bf16[32,16]{1,0} fusion(%pallas_call.9), kind=kLoop, calls=%fused_add
}
"""


def test_pallas_kernels_are_grouped_by_name_and_their_products_and_attention_counted_apart():
    groups = {g["group"]: g for g in rank(PALLAS_LIKE)}
    assert set(groups) == {
        "custom-call __gpu$xla.gpu.triton matmul_gelu_forward",
        "custom-call __gpu$xla.gpu.triton residual_norm_forward",
        "custom-call __gpu$xla.gpu.triton attention_forward",
        "loop_add_fusion",
    }
    # x (512 B) and w (256 B) in, h and gelu(h) (1,024 B each) out.
    assert groups["custom-call __gpu$xla.gpu.triton matmul_gelu_forward"]["bytes"] == 512 + 256 + 2048
    s = summarize(PALLAS_LIKE)
    assert s["matrix_products"] == {"kernels": 1, "gb": 2816 / 1e9}
    assert s["attention"] == {"kernels": 1, "gb": 3 * 1024 / 1e9}  # two operands in, one out
    assert s["other"] == {"kernels": 2, "gb": 2 * 2048 / 1e9}


def test_kernels_are_listed_in_program_order_with_their_runs(capsys, tmp_path):
    found = kernels(GPU_LIKE)
    assert [(k["name"], k["runs"], k["bytes"]) for k in found] == [
        ("mm", 1, 512 + 256 + 1024 + 1024),
        ("att", 1, 1024 + 1024),
        ("loop_add_fusion.1", 1, 2048),
        ("loop_add_fusion.2.1", 1, 2048),
        ("loop_add_fusion.9", 1, 2048),  # in the command buffer
        ("loop_add_fusion.3", 4, 2048),  # in the loop body
    ]
    assert found[1]["group"] == "custom-call __cudnn$fmhaSoftmax"
    assert found[1]["shape"] == "(bf16[32,16], u8[0])"  # layouts dropped
    assert sum(k["runs"] * k["bytes"] for k in found) == sum(g["bytes"] for g in rank(GPU_LIKE))
    # --sequence prints them in that order, with their runs, and skips the small ones.
    path = tmp_path / "gpu_like.hlo.txt"
    path.write_text(GPU_LIKE)
    main(["--rank", str(path), "--sequence", "--min_mb", "0"])
    everything = capsys.readouterr().out.splitlines()
    main(["--rank", str(path), "--sequence", "--min_mb", "0.0025"])
    large = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in everything[:-1]] == ["0", "1", "2", "3", "4", "5"]
    assert [k["name"] in line for k, line in zip(found, everything, strict=False)] == [True] * 6
    assert " x4 " in everything[5] and everything[-1] == "6 of 6 kernels at 0.0 MB or more"
    assert len(large) == 2 and " mm " in large[0] and large[-1] == "1 of 6 kernels at 0.0025 MB or more"


# Collectives: an asynchronous all-reduce in a loop body run 3 times, an all-reduce wrapped in
# a fusion (as XLA's GPU compiler emits some) and a plain all-gather in the entry computation.
WITH_COLLECTIVES = """\
HloModule m, is_scheduled=true

%sum (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%fused_all-reduce.7.clone (p: bf16[64,16]) -> bf16[64,16] {
  %p = bf16[64,16]{1,0} parameter(0)
  ROOT %ar = bf16[64,16]{1,0} all-reduce(%p), replica_groups={{0,1}}, to_apply=%sum
}

%body (t: (s32[], f32[1000])) -> (s32[], f32[1000]) {
  %t = (s32[], f32[1000]{0}) parameter(0)
  %g = f32[1000]{0} get-tuple-element(%t), index=1
  %i = s32[] get-tuple-element(%t), index=0
  %all-reduce-start = ((f32[1000]{0}), f32[1000]{0}) all-reduce-start(%g), replica_groups={{0,1}}, to_apply=%sum, metadata={op_name="jit(step)/while/body/grad"}
  %all-reduce-done = f32[1000]{0} all-reduce-done(%all-reduce-start)
  ROOT %r = (s32[], f32[1000]{0}) tuple(%i, %all-reduce-done)
}

ENTRY %main (x: bf16[64,16], v: f32[1000], w: f32[8]) -> (bf16[64,16], f32[1000], f32[16]) {
  %x = bf16[64,16]{1,0} parameter(0)
  %v = f32[1000]{0} parameter(1)
  %w = f32[8]{0} parameter(2)
  %fusion-start = ((bf16[64,16]{1,0}), bf16[64,16]{1,0}) fusion-start(%x), kind=kCustom, calls=%fused_all-reduce.7.clone
  %fusion-done = bf16[64,16]{1,0} fusion-done(%fusion-start)
  %c = s32[] constant(0)
  %init = (s32[], f32[1000]{0}) tuple(%c, %v)
  %wh = (s32[], f32[1000]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %out = f32[1000]{0} get-tuple-element(%wh), index=1
  %gathered = f32[16]{0} all-gather(%w), dimensions={0}, replica_groups={{0,1}}
  ROOT %res = (bf16[64,16]{1,0}, f32[1000]{0}, f32[16]{0}) tuple(%fusion-done, %out, %gathered)
}
"""


def test_collectives_are_counted_per_execution_with_those_in_loops_apart():
    found = collectives(WITH_COLLECTIVES)
    assert [(c["name"], c["op"], c["bytes"], c["runs"]) for c in found] == [
        ("fusion-start", "all-reduce", 64 * 16 * 2, 1),
        ("all-reduce-start", "all-reduce", 4000, 3),  # in the loop body, once per iteration
        ("gathered", "all-gather", 32, 1),  # its operand, 8 float32
    ]
    assert found[1]["source"] == "jit(step)/while/body/grad"
    assert collective_totals(WITH_COLLECTIVES) == {
        "count": 5,
        "gb": (2048 + 3 * 4000 + 32) / 1e9,
        "looped_gb": 3 * 4000 / 1e9,
    }
    assert collective_totals(GPU_LIKE) == {"count": 0, "gb": 0.0, "looped_gb": 0.0}
    assert [k["name"] for k in kernels(WITH_COLLECTIVES)] == []  # collectives are not kernels


def test_collectives_read_what_xla_compiles_for_two_devices():
    # Two CPU devices in a fresh process: a sum over the sharded axis in a 4-trip loop.
    script = """
import jax, jax.numpy as jnp, json
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from benchmarks.gpu_compile import collectives
mesh = Mesh(jax.devices(), ("d",))
def f(x):
    return jax.lax.fori_loop(0, 4, lambda i, c: c + jnp.sum(x * i, axis=0), jnp.zeros(x.shape[1:]))
x = jax.ShapeDtypeStruct((8, 256), jnp.float32, sharding=NamedSharding(mesh, P("d")))
text = jax.jit(f, out_shardings=NamedSharding(mesh, P())).trace(x).lower().compile().as_text()
print(json.dumps(collectives(text)))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    # XLA (CPU) reduces each iteration's float32[256] partial sum inside the loop: 4 runs.
    assert [(c["op"], c["bytes"], c["runs"]) for c in found] == [("all-reduce", 1024, 4)], found
    assert "while/body" in found[0]["source"]


def test_an_unknown_element_type_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown element type 'q7' in the HLO shape 'q7\[4\]'"):
        shape_bytes("q7[4]")


def test_rank_reads_what_xla_compiles():
    def f(x, w):
        y = jax.lax.fori_loop(0, 3, lambda i, c: c * 2.0 + 1.0, x)
        return jnp.tanh(y @ w)

    text = jax.jit(f).lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile().as_text()
    by_shape = {}
    for g in rank(text):
        by_shape.setdefault(g["shape"], []).append(g)
    # The loop body's c * 2 + 1 is one fused kernel, 8 KiB in and 8 KiB out, run 3 times (XLA
    # knows the trip count).
    assert any(g["bytes"] == 3 * 16384 and g["count"] == 3 for g in by_shape["f32[64,32]"])
    # The product (and tanh, fused or not) make the f32[64,16] output from 8 KiB and 2 KiB.
    assert sum(g["bytes"] for g in by_shape["f32[64,16]"]) >= 8192 + 2048 + 4096
    # Each kernel names the traced operation it comes from.
    assert any(k["source"].endswith("tanh") or "dot_general" in k["source"] for k in kernels(text))


def test_the_benchmarks_one_pass_row_moments_match_two_passes():
    # keras_jax_welford must time the same LayerNorm statistics as the trainer, to float32
    # rounding (relative to the spread; looser with a row mean 100 times the spread).
    import numpy as np

    from benchmarks.trainer_common import _welford_row_moments
    from trainer.layers import row_moments

    rng = np.random.default_rng(0)
    for centre, tolerance in ((0.0, 1e-5), (100.0, 1e-3)):
        x = jnp.asarray(rng.normal(centre, 1.0, size=(64, 768)), jnp.float32)
        exact = np.asarray(x, np.float64)
        for mean, variance in (row_moments(x), _welford_row_moments(x)):
            assert mean.shape == variance.shape == (64, 1)
            np.testing.assert_allclose(np.asarray(mean)[:, 0], exact.mean(-1), atol=tolerance)
            np.testing.assert_allclose(np.asarray(variance)[:, 0], exact.var(-1), rtol=tolerance)


def test_the_benchmarks_pallas_norm_computes_the_trainers_residual_dropout_and_layer_norm():
    # keras_jax_pallas_norm must time what the trainer computes: its kernel (interpreted on CPU)
    # against the trainer's path in a mixed_bfloat16 TransformerLayer, same weights and inputs.
    from tests.trainer.scripts import run_module

    result = run_module("tests.trainer.pallas_norm_run", backend="jax", env={"JAX_PLATFORMS": "cpu"})
    # With dropout: the same hash masks and roundings, so every output is the same bf16 value.
    trained = result["training=True"]
    assert trained["outputs"] == 4 * 32 * 128 and trained["outputs_differing"] == 0
    # Without: only the order of the row sums differs; at most one bf16 step, rarely.
    evaluated = result["training=False"]
    assert evaluated["outputs_differing"] <= 8 and evaluated["largest_output_ulps"] <= 1.0
    assert result["refusal"] == (
        "fused_residual_norm: x of shape (3, 10, 128) has B * L = 30 rows, not a multiple of 32"
    )
    biases = ("attention_output/bias", "output/bias")
    for run, tolerance in ((trained, 1e-6), (evaluated, 1e-4)):
        errors = run["gradient_relative_errors"]
        assert len(errors) == 17, errors
        assert max(e for name, e in errors.items() if name not in biases) < tolerance, errors
        # The dense layers' bias gradients: the kernel sums them in float32, the trainer's path
        # in bf16; against the float32 layer the kernel's are the closer, within 1%.
        for name in biases:
            against = run["bias_errors_against_float32"][name]
            assert against["pallas"] < min(0.01, against["trainer"]), against


def test_the_benchmarks_pallas_ffn_computes_the_trainers_feed_forward_block():
    # keras_jax_pallas_ffn and keras_jax_pallas_norm_ffn must time what the trainer computes:
    # the Pallas products (interpreted on CPU) in a mixed_bfloat16 TransformerLayer, against
    # the float32 layer on the same weights and inputs, as close as the trainer's own path.
    from tests.trainer.scripts import run_module

    # Blocks smaller than the layer's [128, 128] x [128, 512] products: 2 x 4 programs, each
    # over 4 steps of the contraction (the default blocks would make one row block).
    env = {"JAX_PLATFORMS": "cpu", "PALLAS_FFN_BLOCKS": "64,128,32,4,3"}
    result = run_module("tests.trainer.pallas_ffn_run", backend="jax", env=env)
    assert result["refusal"] == (
        "gelu_product: x of shape (96, 128) and w1 of shape (128, 512) do not split into blocks of "
        "64 rows, 128 columns and 32 of the contraction"
    )
    # The kernels alone against float64 (rounded once to bf16): h and gelu(h) correctly rounded
    # but for a few h (float32 accumulation), dh within one bf16 step, the bias sums to float32.
    k = result["kernels"]
    assert k["blocks"] == [64, 128, 32, 4, 3] and k["elements"] == 128 * 512
    assert k["h_largest_ulps"] <= 1 and k["h_differing"] <= 0.001 * k["elements"], k
    assert k["gelu_largest_ulps"] <= 1, k
    assert k["dh_largest_ulps"] <= 1 and k["dh_differing"] <= 0.001 * k["elements"], k
    assert k["partial_sums_shape"] == [2, 512] and k["partial_sums_relative_error"] < 1e-6, k
    for training in (True, False):
        trainer = result[f"trainer training={training}"]
        # The same roundings; only the products' summation order differs: a few outputs of
        # 16,384 move by one bf16 step (1 with these blocks).
        assert result["outputs"] == 16_384
        assert result[f"pallas_ffn training={training}"]["outputs_differing"] <= 16
        for name in ("pallas_ffn", "pallas_norm_ffn"):
            fused = result[f"{name} training={training}"]
            assert fused["output_error"] <= 1.05 * trainer["output_error"], (name, fused, trainer)
            errors, reference = fused["gradient_errors"], trainer["gradient_errors"]
            assert len(errors) == 17, errors
            # key/bias: its exact gradient is zero (softmax ignores a shift shared by every key)
            checked = set(errors) - {"key/bias"}
            for g in checked:
                assert errors[g] <= 1.1 * reference[g] + 1e-4, (name, training, g, errors[g], reference[g])
            # The bias gradient summed in float32 from the kernel's partial sums: closer than the
            # trainer's bf16 sum, which shows the kernel ran.
            assert errors["intermediate/bias"] < 0.5 * reference["intermediate/bias"], (name, errors)


def _python(code: str, env: dict, **variables: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter in the repository, with ``env`` and ``variables``."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, **variables},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _sweep(module: str, flags: list[str], out, candidates: str):
    """Runs a block sweep (``module``'s main) on CPU with ``flags``, one repeat, the JSON to
    ``out``; its command (candidates last), environment and finished process, which must exit 0."""
    cmd = [
        sys.executable,
        "-m",
        module,
        *flags,
        "--repeats",
        "1",
        "--out",
        str(out),
        "--candidates",
        candidates,
    ]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cmd, env, proc


def test_the_pallas_ffn_sweep_times_each_block_choice_and_names_the_fastest(tmp_path):
    # What a GPU session runs before the Pallas runs (benchmarks/gpu_session.sh), on CPU in
    # interpret mode at a tiny size: XLA's block and each candidate, the ones that do not fit
    # the shapes recorded as errors, and the fastest good one on the PALLAS_FFN_BEST line.
    out = tmp_path / "sweep.json"
    flags = ["--rows", "128", "--hidden", "128", "--intermediate", "512"]
    cmd, env, proc = _sweep("benchmarks.pallas_ffn", flags, out, "[[64, 128, 32, 4, 3], [96, 128, 64, 8, 3]]")
    assert proc.stdout.splitlines()[-1] == "PALLAS_FFN_BEST 64,128,32,4,3"
    results = json.loads(out.read_text())["results"]
    assert [r["name"] for r in results] == ["xla", "pallas (64, 128, 32, 4, 3)", "pallas (96, 128, 64, 8, 3)"]
    xla, good, refused = results
    # Each gradient's error against the block in float32: bf16-sized for XLA's, as small for
    # the candidate's, and smaller for the bias (summed in float32 from the partial sums).
    assert len(xla["gradient_errors"]) == 4 and max(xla["gradient_errors"]) < 0.05 and xla["ms"] > 0
    for mine, theirs in zip(good["gradient_errors"], xla["gradient_errors"], strict=True):
        assert mine <= 2 * theirs + 1e-3, (good, xla)
    assert good["gradient_errors"][2] < xla["gradient_errors"][2], (good, xla)
    assert abs(good["loss"] - xla["loss"]) < 0.05 * abs(xla["loss"]) and good["ms"] > 0
    assert "do not split into blocks of 96 rows" in refused["error"]
    # a budget spent starts no candidate: XLA's block alone, and no blocks to pass on
    proc = subprocess.run([*cmd, "--time_budget_s", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "PALLAS_FFN_BEST ", proc.stderr[-3000:]
    assert [r["name"] for r in json.loads(out.read_text())["results"]] == ["xla"]
    # the blocks a session passes on are read and checked when the module is imported
    env["PALLAS_FFN_BLOCKS"] = "128,128,64,8"
    proc = subprocess.run([sys.executable, "-c", "import trainer.pallas.ffn"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert "PALLAS_FFN_BLOCKS='128,128,64,8': want block_m,block_n,block_k,warps,stages" in proc.stderr
    # and so are the candidates, before anything is timed
    del env["PALLAS_FFN_BLOCKS"]
    for bad, said in (
        ("[[64, 128, 32, 4]]", "--candidates entry [64, 128, 32, 4]: want"),
        ("[[64,", "is not JSON"),
    ):
        proc = subprocess.run(
            [*cmd[:-1], bad], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2 and said in proc.stderr and "PALLAS_FFN " not in proc.stdout, proc.stderr


def test_the_benchmarks_pallas_attention_computes_the_trainers_attention():
    # keras_jax_pallas_attention and keras_jax_pallas_all must time what the trainer computes:
    # the kernels (interpreted on CPU) in a mixed_bfloat16 TransformerLayer against the
    # trainer's XLA attention with hash dropout, on the same weights, inputs and seeds.
    from tests.trainer.scripts import run_module

    # Blocks of 16 queries: 2 programs a head forward, 2 steps of the backward's loop.
    env = {"JAX_PLATFORMS": "cpu", "PALLAS_ATTENTION_BLOCKS": "16,4,16,4"}
    result = run_module("tests.trainer.pallas_attention_run", backend="jax", env=env)
    assert result["blocks"] == [16, 4, 16, 4]
    assert result["layers_traced"] == 2  # the layer with the kernels, with and without dropout
    # The hook draws the attention dropout's seed as the trainer's path does, and leaves to that
    # path what the kernels do not compute: float32 activations, a full [B, 1, L, L] mask, and
    # Keras' own dropout masks (but for evaluation, where nothing is dropped).
    hook = result["hook"]
    assert hook["seed_advanced"] and hook["seed_alike"], hook
    assert hook["taken"] == {
        "bf16": 1, "float32 layer": 0, "a [B, 1, L, L] mask": 0, "Keras dropout masks": 0,
        "Keras dropout masks, no dropout": 1,
    }  # fmt: skip
    # With dropout: the same roundings, the same elements dropped; on CPU the same bits.
    train = result["training=True"]
    assert train["outputs"] == 16_384 and train["outputs_differing"] == 0, train
    assert len(train["gradient_relative_errors"]) == 17
    # key/bias: its exact gradient is zero (softmax ignores a shift shared by every key), so its
    # relative difference is rounding noise over rounding noise; the rest were 0 when last run.
    checked = set(train["gradient_relative_errors"]) - {"key/bias"}
    assert max(train["gradient_relative_errors"][g] for g in checked) <= 1e-6, train
    # Without dropout the trainer's attention is keras.ops.dot_product_attention: the output as
    # close to the float32 layer's, each gradient within twice the trainer's error (the kernels
    # keep the path with dropout's roundings: the scores rounded to bf16).
    evaluation = result["training=False"]
    trainer_error, pallas_error = evaluation["output_against_float32"]
    assert pallas_error <= 1.1 * trainer_error and pallas_error < 0.05, evaluation
    for g in checked:
        trainer_error, pallas_error = evaluation["against_float32"][g]
        assert pallas_error <= 2 * trainer_error + 1e-3, (g, evaluation["against_float32"][g])
    # The function alone (4 heads of 32, a sequence of 64, one example's keys masked from 40):
    # context and query gradient identical; the key and value gradients, summed in float32 over
    # the backward's 4 blocks of queries, within one bf16 step where they differ.
    f = result["function"]
    assert f["elements"] == 16_384 and f["differing"][:2] == [0, 0], f
    assert max(f["differing"]) <= 16 and max(f["largest_relative"]) < 1e-3, f
    # The probabilities dropped are those hash_dropout drops at those [B, N, L, L] positions:
    # 10% of 16,384 pairs, within 3 standard deviations (0.7%).
    # Without dropout (evaluation): context and gradients as close to the trainer's attention in
    # float32 as bf16 allows (the kernels round the scores to bf16, as the path with dropout does;
    # the trainer's keras.ops.dot_product_attention there does not, so it is closer).
    errors = f["without_dropout_against_float32"]
    assert max(errors["trainer"]) < 0.01 and max(errors["pallas"]) < 0.02, errors
    assert f["dropped_as_hash_bits"] is True, f
    assert abs(f["dropped_fraction"] - 0.1) < 0.007, f
    assert result["refusals"] == {
        "(2, 48, 128)": "fused_attention: queries of shape (2, 48, 128): sequence length 48 and head "
        "size 64 must be powers of two",
        "(2, 32, 96)": "fused_attention: queries of shape (2, 32, 96): sequence length 32 and head "
        "size 48 must be powers of two",
        "(2, 256, 128)": "fused_attention: queries of shape (2, 256, 128): sequence length 256 must be "
        "16 to 128 and a multiple of 16 queries",
        "(2, 32, 256)": "fused_attention: queries of shape (2, 32, 256): head size 128 must be 16 to 64",
    }


def test_the_pallas_attention_sweep_times_each_block_choice_and_names_the_fastest(tmp_path):
    # What a GPU session runs before the runs with Pallas attention (benchmarks/gpu_session.sh),
    # on CPU in interpret mode at a tiny size: cuDNN's attention (refused here), the trainer's
    # XLA attention and each candidate, and the fastest good one on the last line.
    out = tmp_path / "sweep.json"
    flags = ["--batch_size", "2", "--seq_len", "32", "--heads", "2", "--head_size", "16"]
    cmd, env, proc = _sweep("benchmarks.pallas_attention", flags, out, "[[16, 4, 32, 4], [64, 4, 64, 8]]")
    report = json.loads(out.read_text())
    assert (report["batch_size"], report["seq_len"], report["heads"], report["head_size"]) == (2, 32, 2, 16)
    names = [r["name"] for r in report["results"]]
    assert names == ["cudnn", "xla", "pallas (16, 4, 32, 4)", "pallas (64, 4, 64, 8)"]
    cudnn, xla, *candidates = report["results"]
    assert cudnn["error"] == "RuntimeError: cuDNN is not detected."
    # Blocks of queries longer than the sequence are cut to it: the blocks the kernels took.
    assert [c["blocks"] for c in candidates] == [[16, 4, 32, 4], [32, 4, 32, 8]]
    # The whole self-attention (the runs' joined kernels): x's, the three kernels' and the query's
    # and value's biases' gradients against the trainer's path in float32, same mask: bf16-sized
    assert len(xla["gradient_errors"]) == 6 and max(xla["gradient_errors"]) < 0.05 and xla["ms"] > 0
    for good in candidates:
        for mine, theirs in zip(good["gradient_errors"], xla["gradient_errors"], strict=True):
            assert mine <= 1.1 * theirs + 1e-4, (good, xla)
        assert abs(good["loss"] - xla["loss"]) < 1e-3 * abs(xla["loss"]) and good["ms"] > 0
    # the faster of the two (both good) is named last, for the session to pass on
    fastest = min(candidates, key=lambda c: c["ms"])
    assert report["best"]["blocks"] == fastest["blocks"]
    assert proc.stdout.splitlines()[-1] == "PALLAS_ATTENTION_BEST " + ",".join(map(str, fastest["blocks"]))
    # the blocks a session passes on are read and checked when the module is imported
    proc = _python("import trainer.pallas.attention", env, PALLAS_ATTENTION_BLOCKS="128,8,96,8")
    assert "PALLAS_ATTENTION_BLOCKS='128,8,96,8': want block_q,warps" in proc.stderr
    proc = subprocess.run([*cmd[:-1], "[[16, 4, 32]]"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "--candidates entry [16, 4, 32]: want" in proc.stderr, proc.stderr


def test_the_pallas_norm_sweep_times_each_block_choice_and_names_the_fastest(tmp_path):
    # What a GPU session runs before its runs (benchmarks/gpu_session.sh): on CPU in interpret
    # mode at a tiny size, the trainer's XLA path for a sublayer's residual sum, dropout and
    # LayerNorm, then each candidate (one the rows do not fit, refused by name), and the
    # fastest good one on the last line.
    out = tmp_path / "sweep.json"
    flags = ["--batch_size", "2", "--seq_len", "16", "--hidden", "128"]  # 32 rows
    candidates = "[[16, 8, 32, 8, 8], [8, 4, 16, 4, 4], [16, 8, 64, 8, 8]]"
    cmd, env, proc = _sweep("benchmarks.pallas_norm", flags, out, candidates)
    report = json.loads(out.read_text())
    assert (report["batch_size"], report["seq_len"], report["hidden"]) == (2, 16, 128)
    names = [r["name"] for r in report["results"]]
    assert names == ["xla", "pallas (16, 8, 32, 8, 8)", "pallas (8, 4, 16, 4, 4)", "pallas (16, 8, 64, 8, 8)"]
    xla, *good, refused = report["results"]
    assert refused["error"] == "batch x sequence length = 32 rows, not a multiple of 64"
    # The product's, bias's, residual's, gamma's and beta's gradients against the XLA path in
    # float32, same mask: bf16-sized for XLA's, as small for each candidate's (the same
    # function, rounding for rounding), and the bias's smaller (summed in float32).
    assert len(xla["gradient_errors"]) == 5 and max(xla["gradient_errors"]) < 0.05 and xla["ms"] > 0
    for candidate in good:
        for mine, theirs in zip(candidate["gradient_errors"], xla["gradient_errors"], strict=True):
            assert mine <= 1.1 * theirs + 2e-3, (candidate, xla)
        assert candidate["gradient_errors"][1] < xla["gradient_errors"][1], (candidate, xla)
    # other blocks, the same values: both candidates' losses and gradients' errors agree
    assert good[0]["loss"] == good[1]["loss"]
    for a, b in zip(good[0]["gradient_errors"], good[1]["gradient_errors"], strict=True):
        assert abs(a - b) <= 1e-6, good
    fastest = min(good, key=lambda c: c["ms"])
    assert report["best"]["blocks"] == fastest["blocks"]
    assert proc.stdout.splitlines()[-1] == "PALLAS_NORM_BEST " + ",".join(map(str, fastest["blocks"]))
    # the blocks a session passes on are read and checked when the module is imported
    proc = _python("import trainer.pallas.norm", env, PALLAS_NORM_BLOCKS="16,8,32,64,8")
    assert "PALLAS_NORM_BLOCKS='16,8,32,64,8': want rows,warps" in proc.stderr, proc.stderr
    code = "from trainer.pallas import norm; print(norm.BLOCKS, norm.refusal((1, 24, 8)))"
    proc = _python(code, env, PALLAS_NORM_BLOCKS="8,4,16,4,4")
    assert proc.stdout.strip() == "(8, 4, 16, 4, 4) batch x sequence length = 24 rows, not a multiple of 16"


def test_bad_input_is_refused_by_name(tmp_path, capsys):
    from benchmarks import gpu_compile

    with pytest.raises(SystemExit):
        gpu_compile.main(["--target_config", str(tmp_path / "missing.txtpb")])
    assert f"--target_config {tmp_path / 'missing.txtpb'}: no such file" in capsys.readouterr().err
    spec = tmp_path / "h100.txtpb"
    spec.write_text("gpu_device_info {}\n")
    with pytest.raises(SystemExit):
        gpu_compile.main(["--target_config", str(spec), "--runs", "keras_jax,torch_full"])
    assert "--runs: run 'torch_full' is not a keras_jax run; known: keras_jax," in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_compile.main(["--target_config", str(spec), "--devices", "3"])
    assert "--devices 3 must be 1 or more and divide --batch_size 256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_compile.main(["--target_config", str(spec), "--devices", "2", "--batch_size", "12",
                          "--runs", "keras_jax_accum4"])  # fmt: skip
    assert "--batch_size 12 must divide by --devices 2 times run keras_jax_accum4's 4 micro-batches" in (
        capsys.readouterr().err
    )
    assert gpu_compile.run_overrides("keras_jax_cublas")["xla_flags"].startswith(
        "--xla_gpu_enable_triton_gemm=false"
    )
    (tmp_path / "not.hlo").write_text("not HLO\n")
    with pytest.raises(SystemExit, match="not.hlo: no ENTRY computation"):
        gpu_compile.main(["--rank", str(tmp_path / "not.hlo")])
    with pytest.raises(SystemExit, match="not.hlo: no ENTRY computation"):
        gpu_compile.main(["--rank", str(tmp_path / "not.hlo"), "--sequence"])
    with pytest.raises(SystemExit):
        gpu_compile.main(["--sequence"])
    assert "--sequence lists the kernels of --rank HLO_TXT" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("jax_cuda12_plugin") is not None
    or importlib.util.find_spec("jax_plugins") is not None,
    reason="this environment has a CUDA plugin for JAX",
)
def test_without_the_cuda_plugin_the_compile_says_what_to_install(tmp_path):
    # The project's environment has no CUDA plugin for JAX (the pins install none).
    spec = tmp_path / "h100.txtpb"
    spec.write_text("gpu_device_info {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_compile", "--target_config", str(spec), "--runs", "keras_jax",
         "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0  # the table reports each run's error
    (result,) = json.loads((tmp_path / "out" / "gpu_compile.json").read_text())
    assert "has no CUDA plugin to compile with" in result["error"]
    assert "install jax-cuda12-plugin and jax-cuda12-pjrt" in result["error"]
