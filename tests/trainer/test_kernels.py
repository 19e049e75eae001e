"""``trainer.kernels``: option checks, the RngBitGenerator and hash dropouts, and (on the JAX backend, in a
subprocess) the cuDNN fused attention program and training with each dropout generator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.trainer.batches import CONFIG
from tests.trainer.scripts import run_module
from trainer import kernels
from trainer.bert_model import BertPretrainingModel


def test_options_name_the_flag_on_bad_values():
    with pytest.raises(ValueError, match=r"--attention_impl must be one of .*got 'flash'"):
        kernels.KernelOptions(attention="flash")
    with pytest.raises(ValueError, match=r"--dropout_rng must be one of .*got 'philox'"):
        kernels.KernelOptions(dropout_rng="philox")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            kernels.KernelOptions(attention="cudnn"),
            "--attention_impl cudnn needs KERAS_BACKEND=jax, not tensorflow",
        ),
        (
            kernels.KernelOptions(dropout_rng="rbg"),
            "--dropout_rng rbg needs KERAS_BACKEND=jax, not tensorflow",
        ),
        (
            kernels.KernelOptions(dropout_rng="hash"),
            "--dropout_rng hash needs KERAS_BACKEND=jax, not tensorflow",
        ),
    ],
)
def test_jax_only_choices_are_refused_on_tensorflow(options, message):
    with pytest.raises(ValueError, match=message):
        BertPretrainingModel(CONFIG, options)


def test_rbg_dropout_drops_the_rate_and_scales_the_rest():
    x = jnp.full((1000, 1000), 3.0, jnp.float32)
    seed = jnp.array([5, 9], jnp.uint32)
    y = np.asarray(kernels.rbg_dropout(x, 0.1, seed))
    kept = y != 0
    # 10^6 Bernoulli(0.9) draws: standard deviation of the kept share 3e-4.
    assert abs(kept.mean() - 0.9) < 2e-3
    np.testing.assert_array_equal(y[kept], np.float32(3.0) / np.float32(0.9))
    # Rows and columns are not correlated (each row's kept share near 0.9 too).
    assert np.abs(kept.mean(axis=1) - 0.9).max() < 0.06
    # Same seed, same mask; the next seed, another mask with the independent overlap 0.81.
    np.testing.assert_array_equal(np.asarray(kernels.rbg_dropout(x, 0.1, seed)), y)
    other = np.asarray(kernels.rbg_dropout(x, 0.1, seed + jnp.array([0, 1], jnp.uint32))) != 0
    assert abs((kept & other).mean() - 0.81) < 3e-3


def test_rbg_dropout_keeps_dtype_and_its_gradient_is_the_mask():
    x = jnp.linspace(-1.0, 1.0, 4096, dtype=jnp.bfloat16).reshape(64, 64)
    seed = jnp.array([1, 2], jnp.uint32)
    y = kernels.rbg_dropout(x, 0.25, seed)
    assert y.dtype == jnp.bfloat16
    grad = jax.grad(lambda v: jnp.sum(kernels.rbg_dropout(v, 0.25, seed).astype(jnp.float32)))(
        jnp.ones((64, 64), jnp.float32)
    )
    mask = np.asarray(kernels.rbg_dropout(jnp.ones((64, 64), jnp.float32), 0.25, seed)) != 0
    np.testing.assert_allclose(np.asarray(grad), np.where(mask, 1 / 0.75, 0.0), rtol=1e-6)


def _z_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 0/1 arrays scaled by sqrt(n): about N(0, 1) when independent."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1] * np.sqrt(a.size))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_add_rows_is_a_broadcast_sum_whose_row_gradient_is_the_batch_sum(dtype):
    # trainer.layers.add_positions on JAX: same output and gradients as x + rows[None], the
    # rows' gradient a product accumulated in float32 (then rounded once to the input dtype).
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 8, 16)), dtype)
    rows = jnp.asarray(rng.normal(size=(8, 16)), dtype)
    weights = jnp.asarray(rng.normal(size=(64, 8, 16)), jnp.float32)

    def loss(add):
        return lambda x, r: jnp.sum(jnp.sin(add(x, r).astype(jnp.float32)) * weights)

    np.testing.assert_array_equal(kernels.add_rows(x, rows), x + rows[None])
    plain = jax.grad(loss(lambda x, r: x + r[None]), argnums=(0, 1))(x, rows)
    product = jax.grad(loss(kernels.add_rows), argnums=(0, 1))(x, rows)
    np.testing.assert_array_equal(product[0], plain[0])
    assert product[1].dtype == dtype
    upstream = np.cos(np.asarray((x + rows[None]).astype(jnp.float32), np.float64)) * np.asarray(weights)
    exact = upstream.sum(axis=0)  # float64 sum over the batch of the same upstream gradient
    scale = np.abs(exact).max()
    error = np.abs(np.asarray(product[1].astype(jnp.float32)) - exact).max() / scale
    assert error < (1e-6 if dtype == jnp.float32 else 2**-8), error


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_project_qkv_is_three_biased_products_with_their_gradients(dtype):
    # trainer.layers.project_qkv on JAX: x @ kernel + bias for each of three kernels (bias in
    # float32, added before rounding), and autodiff's gradients of that for x, kernels, biases.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 8, 32)), dtype)
    weights = [jnp.asarray(rng.normal(size=(32, 16)) / 6, dtype) for _ in range(3)]
    biases = [jnp.asarray(rng.normal(size=(16,)), jnp.float32) for _ in range(3)]
    upstream = [jnp.asarray(rng.normal(size=(4, 8, 16)), jnp.float32) for _ in range(3)]
    tolerance = 1e-6 if dtype == jnp.float32 else 2**-8

    def relative_error(got, want):
        want = np.asarray(want, np.float64)
        return np.abs(np.asarray(jnp.asarray(got, jnp.float32), np.float64) - want).max() / np.abs(want).max()

    def plain(x, ws, bs):
        return [
            (jnp.matmul(x, w, preferred_element_type=jnp.float32) + b).astype(x.dtype)
            for w, b in zip(ws, bs, strict=True)
        ]

    outputs = kernels.project_qkv(x, weights, biases)
    for out, w, b, same in zip(outputs, weights, biases, plain(x, weights, biases), strict=True):
        assert out.shape == (4, 8, 16) and out.dtype == dtype
        exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        assert relative_error(out, exact) < tolerance
        # Rounded once: the float32 product plus the float32 bias (a bf16 product plus a bf16
        # bias, rounded twice, differs in some elements).
        np.testing.assert_array_equal(out, same)

    def loss(project):
        def fn(x, ws, bs):
            outs = project(x, ws, bs)
            return sum(
                jnp.sum(jnp.sin(o.astype(jnp.float32)) * u) for o, u in zip(outs, upstream, strict=True)
            )

        return fn

    got = jax.grad(loss(kernels.project_qkv), argnums=(0, 1, 2))(x, weights, biases)
    want = jax.grad(loss(plain), argnums=(0, 1, 2))(x, weights, biases)
    assert got[0].dtype == dtype and relative_error(got[0], want[0]) < 2 * tolerance
    for g, w in zip(got[1], want[1], strict=True):
        assert g.dtype == dtype and relative_error(g, w) < 2 * tolerance
    for g, w in zip(got[2], want[2], strict=True):  # summed in float32, whatever x's dtype
        assert g.dtype == jnp.float32 and relative_error(g, w) < 1e-6


def test_hash_dropout_masks_are_bernoulli_and_independent():
    shape = (32, 128, 768)  # a BERT-base hidden state at batch 32: 3.1M draws
    seed = jnp.array([1234, 0], jnp.uint32)
    x = jnp.full(shape, 3.0, jnp.float32)
    y = np.asarray(kernels.hash_dropout(x, 0.1, seed))
    kept = y != 0
    # 3.1M Bernoulli(0.9) draws: standard deviation of the kept share 1.7e-4.
    assert abs(kept.mean() - 0.9) < 1e-3
    np.testing.assert_array_equal(y[kept], np.float32(3.0) / np.float32(0.9))
    k = kept.astype(np.float64)
    # Neighbours along each axis, and at the strides of rows and slices, are uncorrelated.
    for axis in range(3):
        n = shape[axis]
        z = _z_correlation(np.take(k, range(n - 1), axis=axis), np.take(k, range(1, n), axis=axis))
        assert abs(z) < 5, (axis, z)
    flat = k.ravel()
    for lag in (1, 2, 64, 768, 4096, 2**16):
        assert abs(_z_correlation(flat[:-lag], flat[lag:])) < 5, lag
    # The next seeds Keras' SeedGenerator hands out (+1 in the second word), and seeds one high
    # bit apart, give unrelated masks; the same seed gives the same mask.
    np.testing.assert_array_equal(np.asarray(kernels.hash_dropout(x, 0.1, seed)), y)
    for other_seed in ([1234, 1], [1234, 2], [1235, 0], [1234 ^ 2**31, 0], [1234, 2**31]):
        other = np.asarray(kernels.hash_dropout(x, 0.1, jnp.array(other_seed, jnp.uint32))) != 0
        assert abs(_z_correlation(k, other.astype(np.float64))) < 5, other_seed
    # Over 64 successive seeds each position is kept Binomial(64, 0.9) times: variance 5.76.
    counts = sum(
        np.asarray(kernels.hash_bits((8, 128, 768), jnp.array([77, t], jnp.uint32))) >= round(0.1 * 2**32)
        for t in range(64)
    )
    assert abs(counts.mean() - 57.6) < 0.05 and abs(counts.var() - 5.76) < 0.15


def test_mix_is_lowbias32():
    # Reference in 64-bit NumPy arithmetic, reduced mod 2^32 by hand.
    x = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint64)
    ref = x ^ (x >> 16)
    ref = (ref * 0x7FEB352D) & 0xFFFFFFFF
    ref ^= ref >> 15
    ref = (ref * 0x846CA68B) & 0xFFFFFFFF
    ref ^= ref >> 16
    np.testing.assert_array_equal(np.asarray(kernels._mix32(jnp.asarray(x.astype(np.uint32)))), ref)


def test_hash_bits_are_distinct_within_a_slice_and_reach_past_2_to_32_elements():
    seed = jnp.array([3, 4], jnp.uint32)
    bits = np.asarray(kernels.hash_bits((4, 2**18), seed))
    assert all(len(np.unique(row)) == 2**18 for row in bits)  # a bijection of the offset
    # Each of the four bytes is uniform (chi-square over 256 values, 255 degrees of freedom).
    expected = bits.size / 256
    for shift in (0, 8, 16, 24):
        counts = np.bincount(((bits >> shift) & 255).ravel(), minlength=256)
        assert ((counts - expected) ** 2 / expected).sum() < 400, shift
    # Rows index the first axis, so a global batch of more than 2^32 elements is fine ...
    big = jax.eval_shape(lambda s: kernels.hash_bits((3, 2**31), s), seed)
    assert big.shape == (3, 2**31) and big.dtype == jnp.uint32
    # ... and a slice of 2^32 elements is refused, naming its shape.
    with pytest.raises(ValueError, match=r"shape \(2, 65536, 65536\) has 2 rows of 4294967296 elements"):
        jax.eval_shape(lambda s: kernels.hash_bits((2, 65536, 65536), s), seed)


@pytest.mark.parametrize("dropout", [kernels.hash_dropout, kernels.rbg_dropout], ids=["hash", "rbg"])
def test_bf16_dropout_scales_the_kept_values_by_exactly_one_over_keep(dropout):
    x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (512, 512)), jnp.bfloat16)
    y = np.asarray(dropout(x, 0.1, jnp.array([7, 8], jnp.uint32)).astype(jnp.float32))
    kept = y != 0
    ratio = y[kept] / np.asarray(x.astype(jnp.float32))[kept]
    # Each kept value is x / 0.9 rounded once to bf16 (relative error under 2^-8), so the mean
    # scale is 1/0.9 to within 1e-4; x / bf16(0.9) would be 0.17% high.
    assert np.abs(ratio * 0.9 - 1).max() < 2**-8
    assert abs(ratio.mean() * 0.9 - 1) < 1e-4


def test_hash_dropout_gradient_is_the_mask_and_keeps_only_the_seed():
    seed = jnp.array([1, 2], jnp.uint32)
    x = jnp.linspace(-1.0, 1.0, 4096, dtype=jnp.bfloat16).reshape(64, 64)
    y = kernels.hash_dropout(x, 0.25, seed)
    assert y.dtype == jnp.bfloat16
    weights = jnp.arange(4096, dtype=jnp.float32).reshape(64, 64)
    grad = jax.grad(lambda v: jnp.sum(kernels.hash_dropout(v, 0.25, seed) * weights))(jnp.ones((64, 64)))
    mask = np.asarray(kernels.hash_dropout(jnp.ones((64, 64), jnp.float32), 0.25, seed)) != 0
    assert abs(mask.mean() - 0.75) < 0.03
    np.testing.assert_allclose(np.asarray(grad), np.where(mask, np.asarray(weights) / 0.75, 0.0), rtol=1e-6)
    # The backward pass keeps the two seed words, nothing of x's size (rbg keeps its mask).
    _, vjp = jax.vjp(lambda v: kernels.hash_dropout(v, 0.25, seed), x)
    assert [a.size for a in jax.tree_util.tree_leaves(vjp) if hasattr(a, "size")] == [2]
    _, vjp = jax.vjp(lambda v: kernels.rbg_dropout(v, 0.25, seed), x)
    assert 4096 in [a.size for a in jax.tree_util.tree_leaves(vjp) if hasattr(a, "size")]


@pytest.fixture(scope="module")
def jax_result() -> dict:
    return run_module("tests.trainer.jax_kernels", backend="jax", env={"JAX_PLATFORMS": "cpu"})


def test_cudnn_program_has_fused_attention_with_dropout_and_no_probabilities(jax_result):
    cudnn, xla = jax_result["lower"]["cudnn"], jax_result["lower"]["xla"]
    # Two layers: one fused forward and one fused backward call each, dropout inside.
    assert (
        sorted(cudnn["calls"])
        == ["__cudnn$fmhaScaleBiasSoftmaxDropout"] * 2 + ["__cudnn$fmhaScaleBiasSoftmaxDropoutBackward"] * 2
    )
    seeds = cudnn["static_seeds"]
    assert len(set(seeds)) == 2 and all(0 < s < 2**31 for s in seeds)  # one seed per layer
    # Each layer's forward and backward share its seed (the backward regenerates the mask).
    assert sorted((s["seed"], s["dropout_rate"]) for s in cudnn["settings"]) == sorted(
        [(s, 0.1) for s in seeds] * 2
    )
    assert cudnn["probability_shaped_values"] == 0
    # The XLA program keeps [B, N, L, L] scores, probabilities and masks, and calls no cuDNN.
    assert xla["calls"] == [] and xla["probability_shaped_values"] > 10


def test_cudnn_refused_without_cudnn_and_auto_falls_back(jax_result):
    refuse = jax_result["refuse"]
    # Forced cudnn on a jaxlib without cuDNN: JAX's own refusal propagates.
    assert refuse["cudnn"] == {"error": "RuntimeError: cuDNN is not detected."}
    # auto on a CPU: XLA, for a logged reason, without trying cuDNN; resolve() agrees.
    assert refuse["auto"] == {"ok": True}
    assert refuse["auto_log"] == ["attention: XLA (JAX runs on cpu, not a GPU)"]
    assert refuse["resolve_cpu"] == "xla"
    # auto where the checks pass but cuDNN fails: the trace-time attempt falls back (warned) ...
    assert refuse["auto_forced_try"] == {"ok": True}
    assert refuse["auto_forced_try_log"] == [
        "cuDNN fused attention not available (cuDNN is not detected.); attention runs in XLA"
    ]
    # ... and so does the compile probe of trainer.task.
    assert refuse["resolve_forced_try"] == "xla"
    # (resolve() settles the dropout generator too, and says so.)
    assert refuse["resolve_forced_try_log"][0] == "dropout masks: hash (--dropout_rng auto on jax)"
    assert refuse["resolve_forced_try_log"][1].startswith(
        "cuDNN fused attention did not compile or run (RuntimeError: cuDNN is not detected."
    )
    assert refuse["resolve_forced_try_log"][2].startswith(
        "attention: XLA (RuntimeError: cuDNN is not detected."
    )
    assert refuse["cudnn_float32"] == (
        "--attention_impl cudnn needs --precision mixed_bfloat16 or mixed_float16; the activations are float32"
    )


def test_each_dropout_generator_trains_reproducibly(jax_result):
    train = jax_result["train"]
    for rng in ("keras", "rbg", "hash"):
        r = train[rng]
        assert r["rerun_max_diff"] == 0.0 and r["losses"] == r["rerun_losses"], rng
        assert all(np.isfinite(r["losses"])) and r["losses"][1] < r["losses"][0], rng
    # Other masks, so other updates: the rbg and hash masks are really used.
    assert train["keras_vs_rbg_max_diff"] > 1e-4
    assert train["keras_vs_hash_max_diff"] > 1e-4
    # The default, auto, is hash on JAX: the same updates bit for bit.
    assert train["auto_vs_hash_max_diff"] == 0.0


def test_auto_dropout_is_hash_on_jax_and_keras_on_tensorflow():
    assert kernels.KernelOptions().dropout_rng == "auto"
    assert kernels.KernelOptions().dropout_for("jax") == "hash"
    assert kernels.KernelOptions().dropout_for("tensorflow") == "keras"
    for rng in ("keras", "rbg", "hash"):
        assert kernels.KernelOptions(dropout_rng=rng).dropout_for("jax") == rng
    # trainer.task settles it before building the model, and says so.
    resolved = kernels.resolve(kernels.KernelOptions(), config=CONFIG, seq_len=16, dtype="float32")
    assert resolved.dropout_rng == "keras"  # this process runs TensorFlow
