"""Hugging Face checkpoints <-> plmjax parameters: shared machinery and the family registry.

A family module (bert.py, t5.py, gpt2.py, ...) declares how each HF state-dict key maps onto
plmjax parameter paths as a list of `Rule`s, plus its tied aliases and ignored buffers, and
exposes `config_from_hf(dict) -> ModelConfig`, its inverse `config_to_hf(cfg)`, `rules(cfg)`,
`params_from_hf(state_dict, cfg)` and `params_to_hf(params, cfg)`. Registering a new family is one
entry in `FAMILIES`. A family with task heads (bert.py, roberta.py) also takes `head=` in those and
declares `HEADS`, `DEFAULT_HEAD` and `ARCHITECTURES`.

Everything here works on plain numpy arrays; the per-layer ('layers_0', 'layers_1', ...) versus
scanned ('layers' with a leading layer axis) layout is handled once, in `stack_layers` /
`unstack_layers`, according to `cfg.scan_layers`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import struct
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from plmjax.config import ModelConfig

# HF activation names -> plmjax activation names (layers.activations.ACTIVATIONS).
ACTIVATIONS = {
    "gelu": "gelu",  # exact erf GELU
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}


def activation_from_hf(name: str, key: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"HF {key}={name!r} has no plmjax equivalent; supported: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def activation_to_hf(name: str) -> str:
    """The HF name of a plmjax activation (the first HF name mapping onto it)."""
    names = {ours: theirs for theirs, ours in reversed(ACTIVATIONS.items())}
    if name not in names:
        raise ValueError(f"model.activation={name!r} has no HF equivalent; supported: {', '.join(sorted(names))}")
    return names[name]


# ---------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """One HF tensor `key` of `shape` <-> the plmjax parameters at `paths` ('/'-joined)."""

    key: str
    paths: tuple[str, ...]
    shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], Sequence[np.ndarray]]  # HF tensor -> one array per path
    to_hf: Callable[..., np.ndarray]  # arrays at `paths` (in order) -> HF tensor


def copy(key: str, path: str, shape: Sequence[int]) -> Rule:
    """A tensor stored identically on both sides (embeddings, norm scales and biases)."""
    return Rule(key, (path,), tuple(shape), lambda w: (w,), lambda p: p)


def dense(
    prefix: str,
    path: str,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    bias: bool = True,
    conv1d: bool = False,
    weight_name: str = "weight",
) -> list[Rule]:
    """A torch Linear `prefix.weight` [out, in] (or GPT-2 Conv1D [in, out]) and `prefix.bias` [out]
    <-> a plmjax Projection `path/kernel` [*in_shape, *out_shape] and `path/bias` [*out_shape]."""
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    if conv1d:
        rules = [
            Rule(
                f"{prefix}.{weight_name}",
                (f"{path}/kernel",),
                (n_in, n_out),
                lambda w: (w.reshape(in_shape + out_shape),),
                lambda k: k.reshape(n_in, n_out),
            )
        ]
    else:
        rules = [
            Rule(
                f"{prefix}.{weight_name}",
                (f"{path}/kernel",),
                (n_out, n_in),
                lambda w: (w.T.reshape(in_shape + out_shape),),
                lambda k: k.reshape(n_in, n_out).T,
            )
        ]
    if bias:
        rules.append(
            Rule(
                f"{prefix}.bias", (f"{path}/bias",), (n_out,),
                lambda b: (b.reshape(out_shape),), lambda b: b.reshape(n_out),
            )
        )
    return rules


def layer_norm(prefix: str, path: str, size: int, bias: bool = True) -> list[Rule]:
    """HF LayerNorm/T5LayerNorm `prefix.weight` (+ `.bias`) <-> plmjax `path/scale` (+ `path/bias`)."""
    rules = [copy(f"{prefix}.weight", f"{path}/scale", (size,))]
    if bias:
        rules.append(copy(f"{prefix}.bias", f"{path}/bias", (size,)))
    return rules


# ---------------------------------------------------------------- layout


_LAYER = re.compile(r"layers_(\d+)")


def stack_layers(tree: Any) -> Any:
    """Per-layer subtrees 'layers_0'..'layers_{n-1}' -> one 'layers' subtree with a leading layer axis."""
    if not isinstance(tree, Mapping):
        return tree
    out = {k: stack_layers(v) for k, v in tree.items() if not _LAYER.fullmatch(k)}
    indices = sorted(int(_LAYER.fullmatch(k).group(1)) for k in tree if _LAYER.fullmatch(k))
    if indices:
        if indices != list(range(len(indices))):
            raise ValueError(f"cannot stack layers: indices {indices} are not 0..{len(indices) - 1}")
        if "layers" in out:
            raise ValueError("cannot stack layers: both 'layers' and 'layers_<i>' subtrees are present")
        layers = [flatten(tree[f"layers_{i}"]) for i in indices]
        keys = set(layers[0])
        for i, layer in enumerate(layers):
            if set(layer) != keys:
                raise ValueError(f"cannot stack layers: layers_{i} has parameters {sorted(set(layer) ^ keys)} "
                                 "that layers_0 does not share")
        out["layers"] = unflatten({k: np.stack([np.asarray(layer[k]) for layer in layers]) for k in keys})
    return out


def unstack_layers(tree: Any) -> Any:
    """Inverse of `stack_layers`: a scanned 'layers' subtree -> 'layers_0'..'layers_{n-1}'."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for k, v in tree.items():
        if k == "layers" and isinstance(v, Mapping):
            flat = {p: np.asarray(a) for p, a in flatten(v).items()}
            lengths = {a.shape[0] if a.ndim else None for a in flat.values()}
            if len(lengths) != 1 or None in lengths:
                raise ValueError(f"cannot unstack 'layers': leading axes differ or are missing: "
                                 f"{ {p: a.shape for p, a in flat.items()} }")
            for i in range(lengths.pop()):
                out[f"layers_{i}"] = unflatten({p: a[i] for p, a in flat.items()})
        else:
            out[k] = unstack_layers(v)
    return out


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten(v, path))
        else:
            flat[path] = v
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


# ---------------------------------------------------------------- the conversion engine


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _to_float32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def convert_from_hf(
    state_dict: Mapping[str, Any],
    cfg: ModelConfig,
    rules: Iterable[Rule],
    tied: Mapping[str, str] = (),
    ignored: Sequence[str] = (),
    fallbacks: Mapping[str, str] = (),
) -> dict:
    """Apply `rules` to a state dict -> the plain plmjax 'params' tree (layout per cfg.scan_layers).

    tied: alias key -> canonical key; an alias may be absent, and if present must equal the canonical
    tensor. ignored: regexes of known-unused HF buffers. fallbacks: rule key -> key whose tensor
    stands in when the rule key is absent (HF ties those two weights when one is missing).
    Any missing, unexpected or mis-shaped key raises one ValueError naming all of them.
    """
    rules = list(rules)
    tied, fallbacks = dict(tied), dict(fallbacks)
    by_key = {r.key: r for r in rules}
    problems = []
    missing = [r for r in rules if r.key not in state_dict and fallbacks.get(r.key) not in state_dict]
    if missing:
        problems.append("missing keys:\n" + "\n".join(f"  {r.key} (expected shape {r.shape})" for r in missing))
    unexpected = [
        k for k in state_dict
        if k not in by_key and k not in tied and not any(re.fullmatch(p, k) for p in ignored)
    ]
    if unexpected:
        problems.append("unexpected keys:\n" + "\n".join(f"  {k} {_shape(state_dict[k])}" for k in unexpected))
    misshaped = []
    for r in rules:
        key = r.key if r.key in state_dict else fallbacks.get(r.key)
        if key in state_dict and _shape(state_dict[key]) != r.shape:
            misshaped.append(f"  {key}: got {_shape(state_dict[key])}, expected {r.shape}")
    untied = []
    for alias, canonical in tied.items():
        if alias not in state_dict:
            continue
        expected = by_key[canonical].shape
        if _shape(state_dict[alias]) != expected:
            misshaped.append(f"  {alias}: got {_shape(state_dict[alias])}, expected {expected} (tied to {canonical})")
        elif canonical in state_dict and not np.array_equal(
            _to_float32(state_dict[alias]), _to_float32(state_dict[canonical])
        ):
            untied.append(f"  {alias} differs from {canonical}")
    if misshaped:
        problems.append("mis-shaped keys (check the config):\n" + "\n".join(misshaped))
    if untied:
        problems.append("weights this config ties differ in the checkpoint:\n" + "\n".join(untied))
    if problems:
        raise ValueError("cannot convert the HF state dict:\n" + "\n".join(problems))

    flat = {}
    for r in rules:
        key = r.key if r.key in state_dict else fallbacks[r.key]
        arrays = r.to_ours(_to_float32(state_dict[key]))
        for path, a in zip(r.paths, arrays, strict=True):
            flat[path] = np.ascontiguousarray(a)
    tree = unflatten(flat)
    return stack_layers(tree) if cfg.scan_layers else tree


def convert_to_hf(params: Mapping, cfg: ModelConfig, rules: Iterable[Rule], tied: Mapping[str, str] = ()) -> dict:
    """Inverse of `convert_from_hf`: plmjax params -> HF state dict (canonical keys and tied aliases)."""
    params = _plain_params(params)
    if cfg.scan_layers:
        params = unstack_layers(params)
    flat = {p: np.asarray(a) for p, a in flatten(params).items()}
    rules = list(rules)
    wanted = {p: r.key for r in rules for p in r.paths}
    problems = []
    missing = [p for p in wanted if p not in flat]
    if missing:
        problems.append("missing parameters:\n" + "\n".join(f"  {p} (for {wanted[p]})" for p in missing))
    unexpected = [p for p in flat if p not in wanted]
    if unexpected:
        problems.append(
            "parameters with no HF counterpart:\n" + "\n".join(f"  {p} {flat[p].shape}" for p in unexpected)
        )
    if problems:
        raise ValueError("cannot convert params to an HF state dict:\n" + "\n".join(problems))
    state_dict = {}
    for r in rules:
        w = np.ascontiguousarray(r.to_hf(*(flat[p] for p in r.paths)))
        if w.shape != r.shape:
            raise ValueError(f"parameters {r.paths} give {r.key} of shape {w.shape}, expected {r.shape}")
        state_dict[r.key] = w
    for alias, canonical in dict(tied).items():
        state_dict[alias] = state_dict[canonical].copy()
    return state_dict


def _plain_params(params: Mapping) -> Mapping:
    """Accept a boxed tree or a {'params': ...} variables dict too."""
    import flax.core

    params = flax.core.meta.unbox(params)
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    return params


# ---------------------------------------------------------------- public API


def _hf_dict(hf_config: Any) -> dict:
    if isinstance(hf_config, Mapping):
        return dict(hf_config)
    if hasattr(hf_config, "to_dict"):
        return hf_config.to_dict()
    raise TypeError(f"expected a transformers PretrainedConfig or a config.json dict, got {type(hf_config).__name__}")


def family(model_type: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported HF model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def config_from_hf(hf_config: Any, **overrides: Any) -> ModelConfig:
    """ModelConfig of an HF config (PretrainedConfig or config.json dict); `overrides` set ModelConfig fields."""
    d = _hf_dict(hf_config)
    if "model_type" not in d:
        raise ValueError("the HF config has no 'model_type'")
    cfg = family(d["model_type"]).config_from_hf(d)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def _head_kwargs(model_type: str, head: str | None) -> dict[str, str]:
    if head is None:
        return {}
    if not hasattr(family(model_type), "HEADS"):
        raise ValueError(f"HF model_type {model_type!r} has no selectable heads (got head={head!r})")
    return {"head": head}


def params_from_hf(model_type: str, state_dict: Mapping[str, Any], cfg: ModelConfig, head: str | None = None) -> dict:
    """Plain 'params' tree (the `module_for(cfg, head)` model) from an HF state dict.

    head: for families with task heads (BERT: 'pretraining' (default), 'sequence_classification',
    'token_classification', 'span_extraction', 'none'); None: the family's default.
    """
    return family(model_type).params_from_hf(state_dict, cfg, **_head_kwargs(model_type, head))


def params_to_hf(model_type: str, params: Mapping, cfg: ModelConfig, head: str | None = None) -> dict[str, np.ndarray]:
    """HF state dict (numpy, float32) from plmjax params; inverse of `params_from_hf` (same `head`)."""
    return family(model_type).params_to_hf(params, cfg, **_head_kwargs(model_type, head))


def head_from_hf(hf_model_or_config: Any) -> str | None:
    """The head of a live HF model (by its class) or of an HF config / config.json dict (by its
    `architectures`); None (the family default) for families without selectable heads.

    A live model's class is authoritative: one with no plmjax counterpart raises. A config's
    `architectures` is only a hint (see `release_head`), so an unknown or absent entry gives None.
    """
    live = hasattr(hf_model_or_config, "state_dict") and hasattr(hf_model_or_config, "config")
    if live:
        model_type, name = hf_model_or_config.config.model_type, type(hf_model_or_config).__name__
    else:
        d = _hf_dict(hf_model_or_config)
        model_type, name = d.get("model_type"), (d.get("architectures") or [None])[0]
    architectures = getattr(family(model_type), "ARCHITECTURES", None)
    if architectures is None or (not live and name not in architectures):
        return None
    if name not in architectures:
        raise ValueError(f"HF {name} has no plmjax counterpart; supported: {', '.join(architectures)}")
    return architectures[name]


def release_head(hf_config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> str | None:
    """The head of a checkpoint on disk: what its keys hold when the family can tell (hub
    bert-base-uncased says BertForMaskedLM yet holds the full pretraining weights), else its config's."""
    guess = getattr(family(hf_config["model_type"]), "guess_head", None)
    return (guess and guess(state_dict)) or head_from_hf(hf_config)


def architecture(model_type: str, head: str) -> str:
    """The HF class (config.json `architectures` entry) of a family's head."""
    return {h: a for a, h in family(model_type).ARCHITECTURES.items()}[head]


def default_head(model_type: str) -> str | None:
    """The head a family converts to when none is named (None for families without heads)."""
    return getattr(family(model_type), "DEFAULT_HEAD", None)


def rule_keys(model_type: str, cfg: ModelConfig, head: str | None = None) -> set[str]:
    """The HF keys the family's rules map (tied aliases excluded): what save_pretrained writes."""
    return {r.key for r in family(model_type).rules(cfg, **_head_kwargs(model_type, head))}


# Model fields that do not change what a trained model computes (layout, precision, training-time
# settings): an export need not preserve them. (How it executes is config.runtime, not the model's.)
RUNTIME_FIELDS = ("scan_layers", "remat", "dtype", "init", "initializer_range", "dropout_rate",
                  "attention_dropout_rate", "ffn_dropout")


def _effective(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with its 0 = 'same as ...' fields spelled out, so equal models compare equal."""
    return dataclasses.replace(cfg, head_dim=cfg.kv_dim, num_decoder_layers=cfg.decoder_layers,
                               embedding_size=cfg.emb_dim)


def config_to_hf(model_type: str, cfg: ModelConfig, head: str | None = None) -> dict[str, Any]:
    """The HF config.json dict of `cfg`; refuses a cfg that the HF family cannot express."""
    d = family(model_type).config_to_hf(cfg, **_head_kwargs(model_type, head))
    want, back = _effective(cfg), _effective(config_from_hf(d))
    lost = [f"model.{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
            if f.name not in RUNTIME_FIELDS and getattr(want, f.name) != getattr(back, f.name)]
    if lost:
        raise ValueError(f"HF {model_type} cannot express {', '.join(lost)}")
    return d


def model_type_for(cfg: ModelConfig) -> str:
    """The HF family a plmjax model exports to when no HF config came with it."""
    if cfg.arch == "encoder":
        if cfg.attention_kind == "disentangled" or cfg.conv_kernel_size or cfg.pooler_activation != "tanh":
            return deberta.MODEL_TYPE
        if cfg.shared_layer_groups:  # cross-layer sharing: ALBERT (which refuses what it cannot hold)
            return "albert"
        return "roberta" if cfg.position_offset else "bert"
    return {"encoder_decoder": "t5", "decoder": "gpt2"}[cfg.arch]


def module_for(cfg: ModelConfig, head: str | None = None) -> type:
    """The plmjax module class whose parameters `params_from_hf(..., cfg, head)` produces."""
    if cfg.arch == "encoder":
        from plmjax.models.encoder import HEADS

        if (head or bert.DEFAULT_HEAD) not in HEADS:
            raise ValueError(f"unknown encoder head {head!r}; supported: {', '.join(HEADS)}")
        return HEADS[head or bert.DEFAULT_HEAD]
    if head is not None:
        raise ValueError(f"model.arch={cfg.arch!r} has no selectable heads (got head={head!r})")
    from plmjax.models.decoder import DecoderLM
    from plmjax.models.encoder_decoder import EncoderDecoder

    return {"encoder_decoder": EncoderDecoder, "decoder": DecoderLM}[cfg.arch]


def from_torch_model(hf_model: Any, head: str | None = None, **overrides: Any) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a live transformers model; head: inferred from its class if None."""
    cfg = config_from_hf(hf_model.config, **overrides)
    if head is None:
        head = head_from_hf(hf_model)
    state_dict = {k: _torch_to_numpy(v) for k, v in hf_model.state_dict().items()}
    return cfg, params_from_hf(hf_model.config.model_type, state_dict, cfg, head)


def _torch_to_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()
    return t.numpy()


SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """A checkpoint's tensors as numpy (floating point -> float32).

    path: a model.safetensors / pytorch_model.bin file, a sharded *.index.json, or a directory holding
    one of those. Torch pickles are loaded with weights_only=True, so arbitrary objects are refused.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise ValueError(f"{str(path)!r} holds no model.safetensors or pytorch_model.bin (or their index)")
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{str(path)!r} is not a sharded-checkpoint index: {e}") from None
        state_dict = {}
        for shard in shards:
            state_dict.update(read_state_dict(path.parent / shard))
        return state_dict
    if path.suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise ValueError(
        f"unsupported checkpoint {str(path)!r}: expected {' or '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)} "
        "(or a directory / *.index.json)"
    )


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    import safetensors.numpy

    try:
        tensors = safetensors.numpy.load_file(str(path))
    except TypeError:  # numpy has no bfloat16: read the raw buffers through ml_dtypes
        tensors = _read_safetensors_raw(path)
    except Exception as e:  # noqa: BLE001 - any parse error is a bad file
        raise ValueError(f"cannot read safetensors file {str(path)!r}: {e}") from None
    return {k: v.astype(np.float32) if _is_float(v.dtype) else v for k, v in tensors.items()}


def _is_float(dtype) -> bool:
    # ml_dtypes' bfloat16 / float8 (which numpy may return once jax is imported) are not np.floating
    return np.issubdtype(dtype, np.floating) or dtype.name.startswith(("bfloat16", "float8"))


def _read_safetensors_raw(path: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes

    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    data = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError) as e:
        raise ValueError(f"cannot read safetensors file {str(path)!r}: {e}") from None
    body = memoryview(data)[8 + n :]
    out = {}
    for k, info in header.items():
        if k == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{str(path)!r}: tensor {k} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        out[k] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).astype(
            np.float32 if info["dtype"] in ("BF16", "F16") else dtypes[info["dtype"]]
        )
    return out


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, bad zip, unsafe globals, ...
        raise ValueError(
            f"cannot load {str(path)!r} as a torch state dict with weights_only=True "
            f"(not a plain tensor checkpoint, or it pickles arbitrary objects): {e}"
        ) from None
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return {k: _torch_to_numpy(v) for k, v in obj.items()}


# ---------------------------------------------------------------- registry

from plmjax.convert import (  # noqa: E402  (they use the helpers above)
    albert, bert, deberta, deberta_v1, electra, gpt2, roberta, t5)

FAMILIES: dict[str, ModuleType] = {"bert": bert, "roberta": roberta, "albert": albert, "electra": electra,
                                   "deberta": deberta_v1, "deberta-v2": deberta, "t5": t5, "gpt2": gpt2}
