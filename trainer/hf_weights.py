"""The one mapping between the trainer's weight names and Hugging Face BERT's, in both directions.

Declarative: ``_GLOBAL_MAP`` and ``_LAYER_MAP`` pair each export name of
docs/export_format.md with its ``BertForPreTraining`` state-dict key and a named transform
(Keras dense kernels are ``[in, out]``, torch linear weights ``[out, in]``).
``CONFIG_MAP`` pairs the ``bert_config.json`` keys with ``config.json``'s.

- ``native_to_hf``: export weights -> ``BertForPreTraining`` state dict (with the tied decoder).
- ``hf_to_native``: a ``BertForPreTraining``, ``BertForMaskedLM`` or ``BertModel`` state dict ->
  export weights; heads the checkpoint lacks are initialized as BERT does and reported.
- ``load_hf_bert``: reads a Hugging Face folder (``config.json`` + ``model.safetensors``, or
  ``pytorch_model.bin`` when torch is installed), local or ``gs://``.

Every function checks the key sets and every shape before producing anything, and raises
``ValueError`` listing what is missing, unexpected or of the wrong shape. numpy only: no
TensorFlow, Keras or torch import (torch only to read a ``pytorch_model.bin``).

Shape key: V vocabulary, H hidden, I intermediate, P positions, T token types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np

from trainer import fileio

# --- transforms -----------------------------------------------------------------------------


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _transpose(x: np.ndarray) -> np.ndarray:
    # Keras Dense kernel [in, out] <-> torch Linear weight [out, in]; an involution.
    return np.ascontiguousarray(x.T)


# --- the weight-name map --------------------------------------------------------------------

#: export name -> (BertForPreTraining key, transform); shapes are native (export) shapes.
_GLOBAL_MAP: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", _same),
    "embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight", _same),
    "embeddings/token_type_embeddings": ("bert.embeddings.token_type_embeddings.weight", _same),
    "embeddings/layer_norm/gamma": ("bert.embeddings.LayerNorm.weight", _same),
    "embeddings/layer_norm/beta": ("bert.embeddings.LayerNorm.bias", _same),
    "pooler/kernel": ("bert.pooler.dense.weight", _transpose),
    "pooler/bias": ("bert.pooler.dense.bias", _same),
    "mlm/transform/kernel": ("cls.predictions.transform.dense.weight", _transpose),
    "mlm/transform/bias": ("cls.predictions.transform.dense.bias", _same),
    "mlm/transform/layer_norm/gamma": ("cls.predictions.transform.LayerNorm.weight", _same),
    "mlm/transform/layer_norm/beta": ("cls.predictions.transform.LayerNorm.bias", _same),
    "mlm/output_bias": ("cls.predictions.bias", _same),
    "nsp/kernel": ("cls.seq_relationship.weight", _transpose),
    "nsp/bias": ("cls.seq_relationship.bias", _same),
}

#: Per layer ``{i}``: export name suffix -> (key suffix, transform).
_LAYER_MAP: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "attention/query/kernel": ("attention.self.query.weight", _transpose),
    "attention/query/bias": ("attention.self.query.bias", _same),
    "attention/key/kernel": ("attention.self.key.weight", _transpose),
    "attention/key/bias": ("attention.self.key.bias", _same),
    "attention/value/kernel": ("attention.self.value.weight", _transpose),
    "attention/value/bias": ("attention.self.value.bias", _same),
    "attention/output/kernel": ("attention.output.dense.weight", _transpose),
    "attention/output/bias": ("attention.output.dense.bias", _same),
    "attention/layer_norm/gamma": ("attention.output.LayerNorm.weight", _same),
    "attention/layer_norm/beta": ("attention.output.LayerNorm.bias", _same),
    "intermediate/kernel": ("intermediate.dense.weight", _transpose),
    "intermediate/bias": ("intermediate.dense.bias", _same),
    "output/kernel": ("output.dense.weight", _transpose),
    "output/bias": ("output.dense.bias", _same),
    "output/layer_norm/gamma": ("output.LayerNorm.weight", _same),
    "output/layer_norm/beta": ("output.LayerNorm.bias", _same),
}

#: ``BertForPreTraining`` keys tied to another key: they are in the state dict but not in a
#: ``save_pretrained`` file. key -> the key it equals.
TIED_KEYS: dict[str, str] = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

#: ``bert_config.json`` key -> ``config.json`` key (the same names, listed to be explicit).
CONFIG_MAP: dict[str, str] = {
    name: name
    for name in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
        "layer_norm_eps",
    )
}

#: Activations the trainer implements, by their Hugging Face names. ``gelu_pytorch_tanh`` is
#: the same tanh approximation as ``gelu_new`` (a fused kernel), so it imports as ``gelu_new``.
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new"}

#: Keys of old checkpoints (google-research/bert converted by transformers v2-v3) -> today's.
_LEGACY_SUFFIXES = ((".gamma", ".weight"), (".beta", ".bias"))

#: Buffers and tied copies that some checkpoints store; they carry no weight of their own.
_IGNORED_KEY = re.compile(r"(^|\.)embeddings\.position_ids$|^cls\.predictions\.decoder\.(weight|bias)$")

#: The heads that ``BertForMaskedLM`` and ``BertModel`` checkpoints lack, by export name prefix.
_POOLER_PREFIX, _MLM_PREFIX, _NSP_PREFIX = "pooler/", "mlm/", "nsp/"


def _get(config, name: str):
    return config[name] if isinstance(config, dict) else getattr(config, name)


def name_map(num_hidden_layers: int) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """Every export name -> (``BertForPreTraining`` key, transform), for ``num_hidden_layers``."""
    mapping = dict(_GLOBAL_MAP)
    for i in range(num_hidden_layers):
        for suffix, (key, fn) in _LAYER_MAP.items():
            mapping[f"encoder/layer_{i}/{suffix}"] = (f"bert.encoder.layer.{i}.{key}", fn)
    return mapping


def native_shapes(config) -> dict[str, tuple[int, ...]]:
    """The export shape of every weight, from a ``BertConfig`` or a ``bert_config.json`` dict."""
    v, h, i_ = _get(config, "vocab_size"), _get(config, "hidden_size"), _get(config, "intermediate_size")
    p, t = _get(config, "max_position_embeddings"), _get(config, "type_vocab_size")
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings/word_embeddings": (v, h),
        "embeddings/position_embeddings": (p, h),
        "embeddings/token_type_embeddings": (t, h),
        "embeddings/layer_norm/gamma": (h,),
        "embeddings/layer_norm/beta": (h,),
        "pooler/kernel": (h, h),
        "pooler/bias": (h,),
        "mlm/transform/kernel": (h, h),
        "mlm/transform/bias": (h,),
        "mlm/transform/layer_norm/gamma": (h,),
        "mlm/transform/layer_norm/beta": (h,),
        "mlm/output_bias": (v,),
        "nsp/kernel": (h, 2),
        "nsp/bias": (2,),
    }
    layer = {
        "attention/query/kernel": (h, h),
        "attention/query/bias": (h,),
        "attention/key/kernel": (h, h),
        "attention/key/bias": (h,),
        "attention/value/kernel": (h, h),
        "attention/value/bias": (h,),
        "attention/output/kernel": (h, h),
        "attention/output/bias": (h,),
        "attention/layer_norm/gamma": (h,),
        "attention/layer_norm/beta": (h,),
        "intermediate/kernel": (h, i_),
        "intermediate/bias": (i_,),
        "output/kernel": (i_, h),
        "output/bias": (h,),
        "output/layer_norm/gamma": (h,),
        "output/layer_norm/beta": (h,),
    }
    for n in range(_get(config, "num_hidden_layers")):
        shapes.update({f"encoder/layer_{n}/{k}": s for k, s in layer.items()})
    return shapes


def hf_shapes(config) -> dict[str, tuple[int, ...]]:
    """The ``BertForPreTraining`` shape of every mapped key (tied keys excluded)."""
    native = native_shapes(config)
    return {
        key: (native[name][::-1] if fn is _transpose else native[name])
        for name, (key, fn) in name_map(_get(config, "num_hidden_layers")).items()
    }


def _problems(*, expected: dict[str, tuple[int, ...]], actual: dict[str, np.ndarray], what: str) -> list[str]:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    mismatched = [
        f"{k}: expected {list(expected[k])}, got {list(np.shape(actual[k]))}"
        for k in expected
        if k in actual and tuple(np.shape(actual[k])) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} {what}: {missing}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} {what}: {unexpected}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {mismatched}")
    return problems


def check_native_weights(weights: dict[str, np.ndarray], config) -> None:
    """Raises ``ValueError`` listing missing, unexpected and wrongly shaped export weights."""
    problems = _problems(expected=native_shapes(config), actual=weights, what="weight(s)")
    if problems:
        raise ValueError("the weights do not fit bert_config.json: " + "; ".join(problems))


def native_to_hf(weights: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export weights -> ``BertForPreTraining`` state dict (float32, torch layouts).

    The result includes the tied ``cls.predictions.decoder.{weight,bias}`` (see ``TIED_KEYS``);
    drop them to get what ``save_pretrained`` writes.

    Args:
        weights: export name -> array (docs/export_format.md).
        config: a ``trainer.config.BertConfig`` or a ``bert_config.json`` dict.

    Raises:
        ValueError: listing missing, unexpected and wrongly shaped weights; nothing is converted.
    """
    check_native_weights(weights, config)
    state = {
        key: np.ascontiguousarray(fn(np.asarray(weights[name])), dtype=np.float32)
        for name, (key, fn) in name_map(_get(config, "num_hidden_layers")).items()
    }
    for tied, source in TIED_KEYS.items():
        state[tied] = state[source]
    return state


# --- configs --------------------------------------------------------------------------------


def bert_config_from_hf(hf_config: dict) -> dict:
    """A Hugging Face BERT ``config.json`` dict -> ``bert_config.json`` dict.

    ``use_nsp`` is taken from ``config.json`` when present (the converter writes it), else it
    is true unless the checkpoint is a ``BertForMaskedLM`` (trained without NSP).

    Raises:
        ValueError: for a missing key or a model the trainer cannot represent (another
            ``model_type``, an unknown ``hidden_act``, relative position embeddings, a decoder
            or cross-attention).
    """
    problems = []
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        problems.append(f"model_type={model_type!r} (only 'bert' is supported)")
    act = hf_config.get("hidden_act", "gelu")
    if act not in _HF_ACTIVATIONS:
        problems.append(f"hidden_act={act!r} (supported: {sorted(_HF_ACTIVATIONS)})")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        problems.append(f"position_embedding_type={position_type!r} (only 'absolute' is supported)")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf_config.get(flag):
            problems.append(f"{flag}=true (only a bidirectional encoder is supported)")
    missing = sorted(k for k in CONFIG_MAP.values() if k not in hf_config and k != "hidden_act")
    if missing:
        problems.append(f"missing key(s) {missing}")
    if problems:
        raise ValueError("unsupported Hugging Face BERT config: " + "; ".join(problems))
    values = {ours: hf_config[theirs] for ours, theirs in CONFIG_MAP.items() if theirs in hf_config}
    values["hidden_act"] = _HF_ACTIVATIONS[act]
    if "use_nsp" in hf_config:
        values["use_nsp"] = bool(hf_config["use_nsp"])
    else:
        values["use_nsp"] = "BertForMaskedLM" not in (hf_config.get("architectures") or [])
    return values


def hf_config_from_bert_config(config, *, pad_token_id: int = 0) -> dict:
    """A ``BertConfig`` (or its dict) -> ``config.json`` for ``BertForPreTraining``.

    Also carries ``use_nsp``, so that importing the result back gives the same config.
    """
    values = config if isinstance(config, dict) else config.to_dict()
    out = {
        "architectures": ["BertForPreTraining"],
        "model_type": "bert",
        **{theirs: values[ours] for ours, theirs in CONFIG_MAP.items()},
        "pad_token_id": int(pad_token_id),
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": "float32",
        "use_nsp": bool(values.get("use_nsp", True)),
    }
    return dict(sorted(out.items()))


# --- Hugging Face -> native ----------------------------------------------------------------


def _canonical_keys(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Renames legacy ``LayerNorm.gamma/beta`` keys and adds the ``bert.`` prefix of a ``BertModel``."""
    notes = []
    bare = not any(k.startswith(("bert.", "cls.")) for k in state)
    out = {}
    for key, value in state.items():
        new = key
        for old_suffix, new_suffix in _LEGACY_SUFFIXES:
            if new.endswith(old_suffix) and "LayerNorm" in new:
                new = new[: -len(old_suffix)] + new_suffix
        out["bert." + new if bare else new] = value
    if bare:
        notes.append("keys have no 'bert.' prefix: read as a BertModel checkpoint")
    return out, notes


def check_tied_decoder(state: dict[str, np.ndarray], hf_config: dict) -> None:
    """Raises ``ValueError`` when the checkpoint's MLM decoder is not the word-embedding matrix.

    The trainer ties them (as BERT does); an untied decoder cannot be represented.
    """
    decoder = state.get("cls.predictions.decoder.weight")
    if decoder is None:
        return
    if hf_config.get("tie_word_embeddings", True) is False:
        raise ValueError("tie_word_embeddings=false: an untied MLM decoder is not supported")
    embeddings = state.get("bert.embeddings.word_embeddings.weight")
    if embeddings is not None and not np.array_equal(decoder, embeddings):
        raise ValueError(
            "cls.predictions.decoder.weight differs from bert.embeddings.word_embeddings.weight: "
            "an untied MLM decoder is not supported"
        )


def _init_head(name: str, shape: tuple[int, ...], *, initializer_range: float, rng) -> np.ndarray:
    """BERT's initialization: LayerNorm gamma 1, biases and beta 0, matrices truncated normal."""
    if name.endswith("/gamma"):
        return np.ones(shape, np.float32)
    if name.endswith(("bias", "/beta")):  # includes mlm/output_bias
        return np.zeros(shape, np.float32)
    # Truncated at two standard deviations, as keras.initializers.TruncatedNormal.
    values = rng.standard_normal(shape)
    bad = np.abs(values) > 2.0
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) > 2.0
    return (values * initializer_range).astype(np.float32)


def hf_to_native(
    state: dict[str, np.ndarray], hf_config: dict, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """A Hugging Face BERT state dict -> export weights, plus report lines.

    Accepts the key sets of ``BertForPreTraining``, ``BertForMaskedLM`` (no pooler, no NSP
    head) and ``BertModel`` (no ``bert.`` prefix, no heads). Heads the checkpoint lacks are
    initialized as BERT does (truncated normal ``initializer_range``, zero biases, LayerNorm
    ones) and reported. Legacy ``LayerNorm.gamma/beta`` names, ``position_ids`` buffers and
    a decoder equal to the word embeddings are accepted.

    Args:
        state: key -> array (any float dtype; converted to float32).
        hf_config: the ``config.json`` dict.
        seed: seed of the initialization of missing heads.

    Raises:
        ValueError: for an unsupported config, a missing encoder weight, an unexpected key,
            a wrong shape, or an untied decoder; the message lists every problem.
    """
    config = bert_config_from_hf(hf_config)
    state, report = _canonical_keys(dict(state))
    check_tied_decoder(state, hf_config)
    ignored = sorted(k for k in state if _IGNORED_KEY.search(k))
    if ignored:
        report.append(f"ignored {len(ignored)} buffer/tied key(s): {ignored}")
    present = {k: v for k, v in state.items() if k not in ignored}
    mapping = name_map(config["num_hidden_layers"])
    native = native_shapes(config)
    expected = hf_shapes(config)
    # A head wholly absent is initialized below; a missing encoder weight or part of a head is an error.
    absent_heads = set()
    for prefix in (_POOLER_PREFIX, _MLM_PREFIX, _NSP_PREFIX):
        keys = [key for name, (key, _) in mapping.items() if name.startswith(prefix)]
        if not any(k in present for k in keys):
            absent_heads.update(keys)
    problems = _problems(
        expected={k: s for k, s in expected.items() if k not in absent_heads},
        actual=present,
        what="key(s)",
    )
    if problems:
        raise ValueError("the Hugging Face weights do not fit config.json: " + "; ".join(problems))
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    initialized: dict[str, list[str]] = {}
    for name, (key, fn) in mapping.items():
        if key in present:
            weights[name] = np.ascontiguousarray(fn(np.asarray(present[key], dtype=np.float32)))
        else:
            weights[name] = _init_head(
                name, native[name], initializer_range=config["initializer_range"], rng=rng
            )
            initialized.setdefault(name.split("/")[0], []).append(key)
    for head, keys in sorted(initialized.items()):
        report.append(f"initialized the missing {head} head ({len(keys)} weight(s): {sorted(keys)})")
    dtypes = sorted({str(np.asarray(v).dtype) for v in present.values()} - {"float32"})
    if dtypes:
        report.append(f"converted {dtypes} weights to float32")
    return weights, report


# --- reading a Hugging Face folder ----------------------------------------------------------


#: safetensors dtype names numpy reads directly (BF16 is widened by hand).
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def _parse_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Parses a safetensors file by hand; BF16 tensors are widened exactly to float32.

    Used only when ``safetensors.numpy`` refuses the file (numpy has no bfloat16).
    """
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        else:
            raise ValueError(f"tensor {name}: unsupported dtype {info['dtype']}")
        out[name] = array.reshape(info["shape"])
    return out


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    from safetensors.numpy import load

    data = fileio.read_bytes(path)
    try:
        return dict(load(data)), []
    except Exception as first:  # safetensors raises its own error types, e.g. for BF16
        try:
            return _parse_safetensors(data), [f"{path}: bfloat16 tensors widened to float32 (exact)"]
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file numpy can read: {first}; {e}") from e


def read_hf_state(hf_dir: str) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """Reads the weights of a Hugging Face folder: ``(key -> array, the file read, notes)``.

    Tries ``model.safetensors``, then a sharded ``model.safetensors.index.json``, then
    ``pytorch_model.bin`` (only when torch is importable). bfloat16 tensors are widened to
    float32 (exact) and noted; other dtypes are kept.

    Raises:
        FileNotFoundError: naming the files looked for.
    """
    single = fileio.join(hf_dir, "model.safetensors")
    if fileio.exists(single):
        state, notes = _read_safetensors(single)
        return state, single, notes
    index = fileio.join(hf_dir, "model.safetensors.index.json")
    if fileio.exists(index):
        shards = sorted(set(json.loads(fileio.read_text(index))["weight_map"].values()))
        state, notes = {}, []
        for shard in shards:
            shard_state, shard_notes = _read_safetensors(fileio.join(hf_dir, shard))
            state.update(shard_state)
            notes += shard_notes
        return state, index, notes
    bin_path = fileio.join(hf_dir, "pytorch_model.bin")
    if fileio.exists(bin_path):
        try:
            import io

            import torch
        except ImportError as e:
            raise ValueError(
                f"{bin_path}: reading a pytorch_model.bin needs torch, which is not installed"
            ) from e
        loaded = torch.load(io.BytesIO(fileio.read_bytes(bin_path)), map_location="cpu", weights_only=True)
        bf16 = sorted(k for k, v in loaded.items() if v.dtype == torch.bfloat16)
        state = {k: (v.float() if k in bf16 else v).detach().numpy() for k, v in loaded.items()}
        return state, bin_path, [f"{bin_path}: bfloat16 tensors widened to float32 (exact)"] if bf16 else []
    raise FileNotFoundError(
        f"no weights in {hf_dir}: looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin"
    )


def load_hf_bert(hf_dir: str, *, seed: int = 0):
    """Reads a Hugging Face BERT folder into the trainer's terms.

    Args:
        hf_dir: folder with ``config.json`` and the weights (local or ``gs://``).
        seed: seed of the initialization of heads the checkpoint lacks.

    Returns:
        ``(trainer.config.BertConfig, export weights, report lines)``.

    Raises:
        FileNotFoundError: naming a missing file.
        ValueError: for an unsupported config or weights that do not fit it.
    """
    from trainer.config import BertConfig

    config_path = fileio.join(hf_dir, "config.json")
    if not fileio.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: {hf_dir} is not a Hugging Face model folder")
    try:
        hf_config = json.loads(fileio.read_text(config_path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON: {e}") from e
    try:
        config = BertConfig.from_dict(bert_config_from_hf(hf_config))
    except ValueError as e:
        raise ValueError(f"{config_path}: {e}") from e
    state, source, notes = read_hf_state(hf_dir)
    try:
        weights, report = hf_to_native(state, hf_config, seed=seed)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    return config, weights, [f"read {len(state)} tensors from {source}"] + notes + report
