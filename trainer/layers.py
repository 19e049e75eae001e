"""The building blocks of ``BertPretrainingModel``, written with ``keras.ops`` only.

Every block computes what the Hugging Face ``BertForPreTraining`` module of the same role
computes (post-LN Transformer, learned positions, token types). ``named_variables()`` on each
block lists its variables under the export names of docs/export_format.md.

Shape key: B batch, L sequence length, P predictions per sequence, H hidden size,
N attention heads, D head size (H / N), I intermediate size, V vocabulary.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from trainer import kernels
from trainer.config import BertConfig


def _initializer(config: BertConfig) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


_SQRT_HALF = np.float32(0.5**0.5)
_SQRT_2_OVER_PI = np.float32((2 / np.pi) ** 0.5)
_INV_SQRT_2PI = np.float32((2 * np.pi) ** -0.5)
_TANH_CUBIC = np.float32(0.044715)


def activation(config: BertConfig, x):
    """The hidden activation: exact erf GELU or its tanh approximation (HF "gelu_new").

    Hugging Face's formulas, computed in float32 whatever ``x``'s dtype and rounded once. For
    bf16 or fp16 ``x`` (mixed precision, where the step is memory-bound) their derivative is
    written out (``_in_float32``): the backward pass keeps only ``x`` and recomputes the rest
    from it. Keras' own GELU rounds its bf16 steps in bf16 (28-36% of its bf16 outputs
    off the correctly rounded value, against under 0.1% here), and on JAX goes through erfc: two
    polynomial branches, an exponential and divisions per element, with three to five arrays of
    the input's size kept for the backward pass.
    """
    formula, derivative = _GELUS[config.hidden_act]
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype not in ("bfloat16", "float16"):
        # float32 (CPU runs) or float64: autodiff of the formula keeps what it computed.
        return formula(x)
    if isinstance(x, keras.KerasTensor):  # a symbolic build: shapes and dtypes only
        return ops.cast(formula(ops.cast(x, "float32")), dtype)
    return _in_float32(formula, derivative)(x)


def _in_float32(formula, derivative):
    """``formula`` of 16-bit ``x`` in float32, rounded once, whose gradient is ``derivative``
    recomputed from ``x``: the backward pass keeps ``x`` alone."""

    @ops.custom_gradient
    def fn(x):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # positional on JAX and TF
            return ops.cast(ops.cast(upstream, "float32") * derivative(ops.cast(x, "float32")), x.dtype)

        return ops.cast(formula(ops.cast(x, "float32")), x.dtype), grad

    return fn


def _gelu(xf):
    return 0.5 * xf * (1.0 + ops.erf(xf * _SQRT_HALF))


def _gelu_derivative(xf):
    return 0.5 * (1.0 + ops.erf(xf * _SQRT_HALF)) + xf * _INV_SQRT_2PI * ops.exp(-0.5 * xf * xf)


def _gelu_tanh(xf):
    return 0.5 * xf * (1.0 + ops.tanh((xf + xf * xf * xf * _TANH_CUBIC) * _SQRT_2_OVER_PI))


def _gelu_tanh_derivative(xf):
    # tanh(u) as 1 - 2 / (exp(2u) + 1): the same value, written so that XLA does not find the
    # forward pass's tanh(u) in it; when it did, it kept those float32 values for this pass
    # (4 bytes an element of [tokens, intermediate], against x's 2) instead of computing them.
    u = (xf + xf * xf * xf * _TANH_CUBIC) * _SQRT_2_OVER_PI
    t = 1.0 - 2.0 / (ops.exp(u * 2.0) + 1.0)
    return 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * _SQRT_2_OVER_PI * (
        1.0 + xf * xf * (3.0 * _TANH_CUBIC)
    )


# hidden_act -> (function, its derivative), both of float32 tensors (np.float32 constants on the
# right of each product, so that symbolic tensors keep their own operators).
_GELUS = {"gelu": (_gelu, _gelu_derivative), "gelu_new": (_gelu_tanh, _gelu_tanh_derivative)}


def _dense(config: BertConfig, units: int, name: str) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=_initializer(config), name=name)


class _UncastBiasDense(keras.layers.Dense):
    """A ``Dense`` layer whose bias is read in its own dtype under mixed precision (no autocast):
    holds the query, key and value variables, which ``project_qkv`` uses. Called on its own it
    computes what ``Dense`` does, its output in the compute dtype."""

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") == "bias":
            kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        return outputs + ops.cast(self.bias, outputs.dtype)


def _projection(config: BertConfig, units: int, name: str) -> keras.layers.Dense:
    return _UncastBiasDense(units, kernel_initializer=_initializer(config), name=name)


def _layer_norm(config: BertConfig, name: str) -> keras.layers.LayerNormalization:
    return LayerNorm(epsilon=config.layer_norm_eps, name=name)


@keras.saving.register_keras_serializable(package="trainer")
class LayerNorm(keras.layers.LayerNormalization):
    """Keras' ``LayerNormalization`` (same variables, same function) over the last axis whose
    backward pass, under mixed precision, keeps only its 16-bit input and each row's mean and
    1/std: Keras' own keeps three float32 copies of the input's size (``_layer_norm_16``).
    """

    def call(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        last = axis is not None and axis in (-1, len(inputs.shape) - 1)
        if (
            last
            and self.center
            and self.scale
            and not self.rms_scaling
            and keras.backend.standardize_dtype(inputs.dtype) in ("bfloat16", "float16")
            and not isinstance(inputs, keras.KerasTensor)
        ):
            return _layer_norm_16(
                inputs, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"), self.epsilon
            )
        return super().call(inputs)


def row_moments(xf):
    """Mean and variance of float32 ``xf`` over its last axis (kept), in two passes: the
    variance from the centred values, exact where the mean is large against the spread. A
    module-level function, so that a benchmark can time a one-pass form
    (``benchmarks.trainer_common``)."""
    mean = ops.mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    return mean, ops.mean(centred * centred, axis=-1, keepdims=True)


def _layer_norm_16(x, gamma, beta, epsilon: float):
    """LayerNorm of 16-bit ``x`` over its last axis, in float32, rounded once to ``x``'s dtype."""

    @ops.custom_gradient
    def forward(x, gamma, beta):
        xf = ops.cast(x, "float32")
        mean, variance = row_moments(xf)
        centred = xf - mean
        rstd = ops.rsqrt(variance + epsilon)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            dy = ops.cast(upstream, "float32")
            # The row statistics as the forward pass left them: without the barrier, XLA (GPU)
            # computes them again in each kernel of this pass that needs them, and the one that
            # forms dy * xhat for gamma's gradient becomes a normalisation kernel that writes
            # that product out in float32 before a separate reduction reads it back.
            x_, mean_, rstd_ = kernels.barrier((x, mean, rstd))
            xhat = (ops.cast(x_, "float32") - mean_) * rstd_
            g = dy * gamma
            dx = rstd_ * (
                g - ops.mean(g, axis=-1, keepdims=True) - xhat * ops.mean(g * xhat, axis=-1, keepdims=True)
            )
            rows = tuple(range(len(x.shape) - 1))
            # gamma's and beta's gradients in one reduction over the rows: one pass over dy.
            sums = ops.sum(ops.concatenate([dy * xhat, dy], axis=-1), axis=rows)  # [2H]
            width = x.shape[-1]
            return ops.cast(dx, x.dtype), sums[:width], sums[width:]

        return ops.cast(centred * rstd * gamma + beta, x.dtype), grad

    return forward(x, gamma, beta)


def _dense_vars(prefix: str, layer: keras.layers.Dense) -> list:
    return [(f"{prefix}/kernel", layer.kernel), (f"{prefix}/bias", layer.bias)]


def _norm_vars(prefix: str, layer: keras.layers.LayerNormalization) -> list:
    return [(f"{prefix}/gamma", layer.gamma), (f"{prefix}/beta", layer.beta)]


def add_positions(x, positions):
    """``x`` [B, L, H] plus ``positions`` [L, H]; on JAX the gradient of ``positions`` is a
    matrix product (``kernels.add_rows``). A module-level function, so that a benchmark can time
    the plain sum (``benchmarks.trainer_common``)."""
    if keras.backend.backend() == "jax" and not isinstance(x, keras.KerasTensor):
        return kernels.add_rows(x, positions)
    return x + positions[None, :, :]


def project_qkv(x, weights, biases):
    """Queries, keys and values of ``x`` [B, L, H]: ``x @ weight + bias`` for each of the three
    ``[H, H]`` kernels (in ``x``'s dtype) and ``[H]`` biases (the variables' dtype). On JAX
    ``kernels.project_qkv`` (three products forward, each bias added in float32; one joined
    product backward); elsewhere ``project_qkv_joined``. A module-level function, so that a
    benchmark can time the joined product on JAX (``benchmarks.trainer_common``)."""
    if keras.backend.backend() == "jax" and not isinstance(x, keras.KerasTensor):
        return kernels.project_qkv(x, weights, biases)
    return project_qkv_joined(x, weights, biases)


def project_qkv_joined(x, weights, biases):
    """``project_qkv`` as one product of the joined ``[H, 3H]`` kernel, plus the biases in
    ``x``'s dtype, split in three: one bias kernel forward, and one product for x's gradient
    instead of three and a sum."""
    bias = ops.concatenate([ops.cast(b, x.dtype) for b in biases], axis=0)
    qkv = ops.matmul(x, ops.concatenate(list(weights), axis=1)) + bias
    h = ops.shape(weights[0])[1]
    return tuple(qkv[..., i * h : (i + 1) * h] for i in range(len(weights)))


def residual_norm(norm, dropout, residual, dense, inputs, training):
    """``norm(residual + dropout(dense(inputs)))``: a sublayer's output, its dropout, the residual
    sum and LayerNorm; in ``trainer.pallas.norm``'s kernels when the kernel options name ``norm``
    (``--pallas_kernels``), else ``default_residual_norm``.

    Returns the result twice: the copy the next product reads and the copy the next residual sum
    reads. Here they are one tensor; a fused kernel returns two, so that their gradients reach
    its backward pass apart and it sums them itself (autodiff sums the gradients of a tensor
    read twice in a kernel of its own)."""
    if "norm" in dropout.options.pallas:
        from trainer.pallas import norm as pallas_norm

        return pallas_norm.residual_norm(norm, dropout, residual, dense, inputs, training)
    return default_residual_norm(norm, dropout, residual, dense, inputs, training)


def default_residual_norm(norm, dropout, residual, dense, inputs, training):
    """``residual_norm`` in XLA: Keras layers and ops."""
    y = norm(residual + dropout(dense(inputs), training=training))
    return y, y


def feed_forward(layer, x, residual, training):
    """The second sublayer of ``layer`` (a ``TransformerLayer``): ``x``'s GELU feed-forward
    block, its dropout, the residual sum with ``residual`` and LayerNorm (``residual_norm``,
    whose pair it returns); the first product and its GELU in ``trainer.pallas.ffn``'s kernels
    when the kernel options name ``ffn``, else ``default_feed_forward``."""
    if "ffn" in layer.kernel_options.pallas:
        from trainer.pallas import ffn

        return ffn.feed_forward(layer, x, residual, training)
    return default_feed_forward(layer, x, residual, training)


def default_feed_forward(layer, x, residual, training):
    """``feed_forward`` with both products and the GELU in XLA."""
    ff = activation(layer.config, layer.intermediate(x))  # [B, L, I]
    return residual_norm(
        layer.output_layer_norm, layer.hidden_dropout, residual, layer.output_dense, ff, training
    )


def self_attention(layer, x, mask, training):
    """The attention context [B, L, H] of ``layer`` (a ``TransformerLayer``) over ``x`` [B, L, H]:
    queries, keys and values, then attention; in ``trainer.pallas.attention``'s kernels when
    the kernel options name ``attention``, else ``default_self_attention``."""
    if "attention" in layer.kernel_options.pallas:
        from trainer.pallas import attention as pallas_attention

        return pallas_attention.self_attention(layer, x, mask, training)
    return default_self_attention(layer, x, mask, training)


def default_self_attention(layer, x, mask, training):
    """``self_attention`` in XLA (``project_qkv``), then ``attention``."""
    # Heads are contiguous D-wide column blocks of each flat [H, H] kernel, as in HF.
    projections, dtype = (layer.query, layer.key, layer.value), layer.query.compute_dtype
    q, k, v = project_qkv(
        ops.cast(x, dtype),
        [ops.cast(p.kernel, dtype) for p in projections],
        [ops.convert_to_tensor(p.bias) for p in projections],
    )
    return attention(layer, q, k, v, mask, training)


def attention(layer, q, k, v, mask, training):
    """The context [B, L, H] of ``layer``'s (a ``TransformerLayer``) queries, keys and values
    [B, L, H] under ``mask`` (bool [B, 1, 1, L], True where a key may be attended), with dropout on
    the attention probabilities when ``training``: cuDNN's fused attention where the kernel
    options choose it (``trainer.kernels``), else XLA's."""
    cfg = layer.config
    batch, seq_len = ops.shape(q)[0], ops.shape(q)[1]
    heads_shape = (batch, seq_len, cfg.num_attention_heads, cfg.head_size)
    q, k, v = (ops.reshape(t, heads_shape) for t in (q, k, v))  # [B, L, N, D]
    rate = cfg.attention_probs_dropout_prob if training else 0.0
    # A full [B, 1, L, L] mask: cuDNN fused attention (JAX on GPU, bf16) turns the mask into
    # a bias that must span both sequence axes; a [B, 1, 1, L] one makes JAX fall back to
    # XLA attention. Same values either way, so CPU numerics do not change.
    full_mask = ops.broadcast_to(mask, (batch, 1, seq_len, seq_len))
    context = kernels.attention_or_none(
        layer.kernel_options,
        q,
        k,
        v,
        full_mask,
        scale=cfg.head_size**-0.5,
        dropout_rate=rate,
        seed=layer.attention_dropout.static_seed,
    )
    if context is None and rate > 0:
        # Dropout on the probabilities needs them materialised.
        scores = ops.einsum("btnd,bsnd->bnts", q, k) * ops.cast(cfg.head_size**-0.5, q.dtype)
        scores = ops.cast(scores, "float32")
        scores = ops.where(mask, scores, ops.cast(-1e30, "float32"))  # mask [B, 1, 1, L]
        probs = ops.cast(ops.softmax(scores, axis=-1), q.dtype)  # [B, N, L, L]
        probs = layer.attention_dropout(probs, training=training)
        context = ops.einsum("bnts,bsnd->btnd", probs, v)
    elif context is None:
        context = ops.dot_product_attention(q, k, v, mask=full_mask)  # [B, L, N, D]
    return ops.reshape(context, (batch, seq_len, cfg.hidden_size))


class BertEmbeddings(keras.layers.Layer):
    """Word + learned position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, kernel_options: kernels.KernelOptions | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        options = kernel_options or kernels.KernelOptions()
        init = _initializer(config)
        self.word_embeddings = keras.layers.Embedding(
            config.vocab_size, config.hidden_size, embeddings_initializer=init, name="word_embeddings"
        )
        self.position_embeddings = keras.layers.Embedding(
            config.max_position_embeddings,
            config.hidden_size,
            embeddings_initializer=init,
            name="position_embeddings",
        )
        self.token_type_embeddings = keras.layers.Embedding(
            config.type_vocab_size,
            config.hidden_size,
            embeddings_initializer=init,
            name="token_type_embeddings",
        )
        self.layer_norm = _layer_norm(config, "layer_norm")
        self.dropout = kernels.Dropout(config.hidden_dropout_prob, options)

    def build(self, input_shape=None):
        for layer in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            layer.build((None, None))
        self.layer_norm.build((None, None, self.config.hidden_size))
        self.built = True

    def call(self, input_ids, segment_ids, training=False):
        seq_len = ops.shape(input_ids)[1]
        # Positions 0..L-1 are a static slice of the table, not a gather.
        positions = ops.cast(self.position_embeddings.embeddings[:seq_len], self.compute_dtype)  # [L, H]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(segment_ids)  # [B, L, H]
        x = add_positions(x, positions)
        x = self.layer_norm(x)
        return self.dropout(x, training=training)

    def named_variables(self, prefix: str = "embeddings") -> list:
        return [
            (f"{prefix}/word_embeddings", self.word_embeddings.embeddings),
            (f"{prefix}/position_embeddings", self.position_embeddings.embeddings),
            (f"{prefix}/token_type_embeddings", self.token_type_embeddings.embeddings),
            *_norm_vars(f"{prefix}/layer_norm", self.layer_norm),
        ]


class TransformerLayer(keras.layers.Layer):
    """One post-LN BERT layer: self-attention, add & norm, GELU feed-forward, add & norm.

    ``kernel_options`` choose how attention and dropout masks are computed (``trainer.kernels``);
    every choice computes the same function of the weights.
    """

    def __init__(self, config: BertConfig, kernel_options: kernels.KernelOptions | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.kernel_options = kernel_options or kernels.KernelOptions()
        h = config.hidden_size
        self.query = _projection(config, h, "query")
        self.key = _projection(config, h, "key")
        self.value = _projection(config, h, "value")
        self.attention_output = _dense(config, h, "attention_output")
        self.attention_layer_norm = _layer_norm(config, "attention_layer_norm")
        self.intermediate = _dense(config, config.intermediate_size, "intermediate")
        self.output_dense = _dense(config, h, "output")
        self.output_layer_norm = _layer_norm(config, "output_layer_norm")
        self.attention_dropout = kernels.Dropout(config.attention_probs_dropout_prob, self.kernel_options)
        self.hidden_dropout = kernels.Dropout(config.hidden_dropout_prob, self.kernel_options)

    def build(self, input_shape=None):
        h, i = self.config.hidden_size, self.config.intermediate_size
        for layer in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            layer.build((None, None, h))
        self.output_dense.build((None, None, i))
        self.attention_layer_norm.build((None, None, h))
        self.output_layer_norm.build((None, None, h))
        self.built = True

    def call(self, x, mask, training=False, residual=None):
        """Args: x [B, L, H]; mask bool [B, 1, 1, L], True where a key may be attended; residual
        the copy of x that the first residual sum reads (x itself when None).

        Returns the layer's output [B, L, H] and the copy of it the next layer's first residual
        sum reads (``residual_norm``)."""
        residual = x if residual is None else residual
        context = self_attention(self, x, mask, training)
        x, residual = residual_norm(
            self.attention_layer_norm, self.hidden_dropout, residual, self.attention_output, context, training
        )
        return feed_forward(self, x, residual, training)

    def named_variables(self, prefix: str) -> list:
        return [
            *_dense_vars(f"{prefix}/attention/query", self.query),
            *_dense_vars(f"{prefix}/attention/key", self.key),
            *_dense_vars(f"{prefix}/attention/value", self.value),
            *_dense_vars(f"{prefix}/attention/output", self.attention_output),
            *_norm_vars(f"{prefix}/attention/layer_norm", self.attention_layer_norm),
            *_dense_vars(f"{prefix}/intermediate", self.intermediate),
            *_dense_vars(f"{prefix}/output", self.output_dense),
            *_norm_vars(f"{prefix}/output/layer_norm", self.output_layer_norm),
        ]


class MaskedLMHead(keras.layers.Layer):
    """Gathers the masked positions, dense + activation + LayerNorm, then the tied decoder.

    The decoder is the word-embedding matrix (passed to ``call``) plus this layer's own bias.
    """

    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.transform = _dense(config, config.hidden_size, "transform")
        self.layer_norm = _layer_norm(config, "layer_norm")

    def build(self, input_shape=None):
        self.transform.build((None, None, self.config.hidden_size))
        self.layer_norm.build((None, None, self.config.hidden_size))
        self.output_bias = self.add_weight(
            shape=(self.config.vocab_size,), initializer="zeros", name="output_bias", autocast=False
        )
        self.built = True

    def call(self, sequence_output, positions, word_embeddings):
        """Args: sequence_output [B, L, H]; positions int [B, P]; word_embeddings [V, H]."""
        batch, seq_len = ops.shape(sequence_output)[0], ops.shape(sequence_output)[1]
        num_pred = ops.shape(positions)[1]
        flat = ops.reshape(sequence_output, (-1, self.config.hidden_size))  # [B*L, H]
        offsets = ops.arange(batch, dtype="int32")[:, None] * seq_len
        flat_positions = ops.reshape(ops.cast(positions, "int32") + offsets, (-1,))  # [B*P]
        x = ops.take(flat, flat_positions, axis=0)
        x = ops.reshape(x, (batch, num_pred, self.config.hidden_size))  # [B, P, H]
        x = self.layer_norm(activation(self.config, self.transform(x)))
        logits = ops.einsum("bph,vh->bpv", x, ops.cast(word_embeddings, x.dtype))  # [B, P, V]
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def named_variables(self, prefix: str = "mlm") -> list:
        return [
            *_dense_vars(f"{prefix}/transform", self.transform),
            *_norm_vars(f"{prefix}/transform/layer_norm", self.layer_norm),
            (f"{prefix}/output_bias", self.output_bias),
        ]
