"""BERT <-> plmjax encoder models, one head at a time.

The encoder rules (embeddings + layers) are shared; each head adds a few rules:

  head                     HF class                        plmjax module
  pretraining (default)    BertForPreTraining              EncoderForPretraining
  masked_lm                BertForMaskedLM (no pooler)     EncoderForMaskedLM
  sequence_classification  BertForSequenceClassification   EncoderForSequenceClassification
  token_classification     BertForTokenClassification      EncoderForTokenClassification
  span_extraction          BertForQuestionAnswering        EncoderForSpanExtraction
  none                     BertModel (with its pooler)     EncoderModel

BertModel's keys have no 'bert.' prefix; the other classes keep the encoder under 'bert.'.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from plmjax import config as config_lib
from plmjax.config import ModelConfig
from plmjax.convert import hf

# Known-unused buffers of older checkpoints (the position / segment id ranges).
IGNORED = (r"(bert\.)?embeddings\.position_ids", r"(bert\.)?embeddings\.token_type_ids")

# alias -> canonical (the MLM heads only): the MLM decoder is tied to the word embeddings, its
# bias to cls.predictions.bias.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

DEFAULT_HEAD = "pretraining"

# HF class (config.architectures entry) -> head.
ARCHITECTURES = {
    "BertForPreTraining": "pretraining",
    "BertForMaskedLM": "masked_lm",
    "BertForSequenceClassification": "sequence_classification",
    "BertForTokenClassification": "token_classification",
    "BertForQuestionAnswering": "span_extraction",
    "BertModel": "none",
}


def config_from_hf(d: Mapping[str, Any]) -> ModelConfig:
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"BERT position_embedding_type={d['position_embedding_type']!r} is not supported (absolute only)"
        )
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise ValueError("BERT used as a decoder (is_decoder / add_cross_attention) is not supported")
    return config_lib.bert(**encoder_fields(d)).model


def encoder_fields(d: Mapping[str, Any], dropout: float = 0.1, activation: str = "gelu") -> dict[str, Any]:
    """The ModelConfig fields of a BERT-shaped HF config (BERT, ALBERT, ELECTRA); `dropout` and `activation` are
    the family's defaults for keys the config leaves out."""
    pad = d.get("pad_token_id")
    return dict(
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        mlp_dim=d["intermediate_size"],
        activation=hf.activation_from_hf(d.get("hidden_act", activation), "hidden_act"),
        norm_eps=d.get("layer_norm_eps", 1e-12),
        max_length=d["max_position_embeddings"],
        type_vocab_size=d.get("type_vocab_size", 2),
        dropout_rate=d.get("hidden_dropout_prob", dropout),
        attention_dropout_rate=d.get("attention_probs_dropout_prob", dropout),
        initializer_range=d.get("initializer_range", 0.02),
        pad_token_id=0 if pad is None else pad,
        num_labels=_num_labels(d),
    )


def config_to_hf(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, Any]:
    return {"model_type": "bert", "architectures": [hf.architecture("bert", check_head(head))], **encoder_keys(cfg)}


def encoder_keys(cfg: ModelConfig) -> dict[str, Any]:
    """The HF config keys of a BERT-shaped model (inverse of `encoder_fields`)."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": hf.activation_to_hf(cfg.activation),
        "layer_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_length,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "initializer_range": cfg.initializer_range,
        "pad_token_id": cfg.pad_token_id,
        "num_labels": cfg.num_labels,
    }


def _num_labels(d: Mapping[str, Any]) -> int:
    # PretrainedConfig.to_dict() and config.json carry id2label; num_labels is derived from it.
    n = d.get("num_labels") or d.get("_num_labels") or len(d.get("id2label") or {})
    return int(n) if n else 2


# ---------------------------------------------------------------- rules


def embedding_rules(cfg: ModelConfig, prefix: str = "bert.") -> list[hf.Rule]:
    """HF `{prefix}embeddings.*` <-> plmjax 'encoder/embedder/...', all model.embedding_size wide (BERT:
    hidden_size; ALBERT's factorized embeddings are narrower)."""
    E, emb = cfg.emb_dim, f"{prefix}embeddings"
    out = [
        hf.copy(f"{emb}.word_embeddings.weight", "encoder/embedder/token/embedding", (cfg.vocab_size, E)),
        hf.copy(f"{emb}.position_embeddings.weight", "encoder/embedder/position/embedding", (cfg.max_length, E)),
    ]
    if cfg.type_vocab_size:
        out.append(hf.copy(f"{emb}.token_type_embeddings.weight", "encoder/embedder/segment/embedding",
                           (cfg.type_vocab_size, E)))
    return out + hf.layer_norm(f"{emb}.LayerNorm", "encoder/embedder/norm", E)


# plmjax layer parameter -> HF name under a BERT layer (`{prefix}encoder.layer.{i}.`).
LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "out": "attention.output.dense",
    "self_attention_norm": "attention.output.LayerNorm",
    "wi": "intermediate.dense",
    "wo": "output.dense",
    "mlp_norm": "output.LayerNorm",
}


def layer_rules(cfg: ModelConfig, src: str, dst: str, names: Mapping[str, str] = LAYER_NAMES) -> list[hf.Rule]:
    """One post-LN layer: HF `{src}.{names[...]}` <-> plmjax `{dst}/...` (a 'layers_<i>' subtree)."""
    H, heads, hd = cfg.hidden_size, cfg.num_heads, cfg.kv_dim
    out = []
    for name in ("query", "key", "value"):
        out += hf.dense(f"{src}.{names[name]}", f"{dst}/self_attention/{name}", (H,), (heads, hd))
    out += hf.dense(f"{src}.{names['out']}", f"{dst}/self_attention/out", (heads, hd), (H,))
    out += hf.layer_norm(f"{src}.{names['self_attention_norm']}", f"{dst}/self_attention_norm", H)
    out += hf.dense(f"{src}.{names['wi']}", f"{dst}/mlp/wi", (H,), (cfg.mlp_dim,))
    out += hf.dense(f"{src}.{names['wo']}", f"{dst}/mlp/wo", (cfg.mlp_dim,), (H,))
    return out + hf.layer_norm(f"{src}.{names['mlp_norm']}", f"{dst}/mlp_norm", H)


def encoder_rules(cfg: ModelConfig, prefix: str = "bert.") -> list[hf.Rule]:
    """Embeddings and layers: HF `{prefix}embeddings.*`, `{prefix}encoder.*` <-> plmjax 'encoder/...'."""
    out = embedding_rules(cfg, prefix)
    for i in range(cfg.num_layers):
        out += layer_rules(cfg, f"{prefix}encoder.layer.{i}", f"encoder/stack/layers_{i}")
    return out


def _pooler(cfg: ModelConfig, prefix: str = "bert.") -> list[hf.Rule]:
    return hf.dense(f"{prefix}pooler.dense", "pooler/dense", (cfg.hidden_size,), (cfg.hidden_size,))


def mlm_head_rules(cfg: ModelConfig, dense: str, norm: str, bias: str) -> list[hf.Rule]:
    """The MLM transform, its norm and the output bias (the decoder is tied to the word embeddings)."""
    out = hf.dense(dense, "mlm_head/transform", (cfg.hidden_size,), (cfg.emb_dim,))
    out += hf.layer_norm(norm, "mlm_head/norm", cfg.emb_dim)
    return out + [hf.copy(bias, "mlm_head/bias", (cfg.vocab_size,))]


def _masked_lm(cfg: ModelConfig) -> list[hf.Rule]:
    return mlm_head_rules(cfg, "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                          "cls.predictions.bias")


def _pretraining(cfg: ModelConfig) -> list[hf.Rule]:
    H = cfg.hidden_size
    return _pooler(cfg) + _masked_lm(cfg) + hf.dense("cls.seq_relationship", "nsp_head", (H,), (2,))


def _sequence_classification(cfg: ModelConfig) -> list[hf.Rule]:
    return _pooler(cfg) + hf.dense("classifier", "classifier", (cfg.hidden_size,), (cfg.num_labels,))


def _token_classification(cfg: ModelConfig) -> list[hf.Rule]:
    return hf.dense("classifier", "classifier", (cfg.hidden_size,), (cfg.num_labels,))


def _span_extraction(cfg: ModelConfig) -> list[hf.Rule]:
    return hf.dense("qa_outputs", "qa_outputs", (cfg.hidden_size,), (2,))


def _none(cfg: ModelConfig) -> list[hf.Rule]:
    return _pooler(cfg, prefix="")


# head -> (HF prefix of the encoder, the head's extra rules)
HEADS: dict[str, tuple[str, Callable[[ModelConfig], list[hf.Rule]]]] = {
    "pretraining": ("bert.", _pretraining),
    "masked_lm": ("bert.", _masked_lm),
    "sequence_classification": ("bert.", _sequence_classification),
    "token_classification": ("bert.", _token_classification),
    "span_extraction": ("bert.", _span_extraction),
    "none": ("", _none),
}


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"unknown BERT head {head!r}; supported: {', '.join(HEADS)}")
    return head


def rules(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> list[hf.Rule]:
    prefix, head_rules = HEADS[check_head(head)]
    return encoder_rules(cfg, prefix) + head_rules(cfg)


def tied(head: str) -> dict[str, str]:
    return dict(TIED) if head in ("pretraining", "masked_lm") else {}


# ---------------------------------------------------------------- state dicts


def normalize_keys(state_dict: Mapping[str, Any], head: str = DEFAULT_HEAD) -> dict[str, Any]:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta; a BertModel state dict saved
    from inside a wrapper may carry a 'bert.' prefix on every key."""
    out = {}
    for k, v in state_dict.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[k] = v
    if head == "none" and out and all(k.startswith("bert.") for k in out):
        out = {k.removeprefix("bert."): v for k, v in out.items()}
    return out


def guess_head(state_dict: Mapping[str, Any]) -> str | None:
    """The head an HF BERT state dict carries, from its keys (only used to word error messages)."""
    keys = set(state_dict)
    if "cls.seq_relationship.weight" in keys:
        return "pretraining"
    if "cls.predictions.bias" in keys:
        return "masked_lm"
    if "qa_outputs.weight" in keys:
        return "span_extraction"
    if "classifier.weight" in keys:
        return "sequence_classification" if "bert.pooler.dense.weight" in keys else "token_classification"
    if any(k.startswith("encoder.layer.") for k in keys) and not any(k.startswith(("bert.", "cls.")) for k in keys):
        return "none"  # a BertModel's layers (not, say, an ALBERT's: no hint is better than a wrong one)
    return None


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict:
    state_dict = normalize_keys(state_dict, check_head(head))
    try:
        return hf.convert_from_hf(state_dict, cfg, rules(cfg, head), tied(head), IGNORED)
    except ValueError as e:
        guess = guess_head(state_dict)
        if guess is None or guess == head:
            raise
        raise ValueError(f"{e}\n(converting with head={head!r}, but the keys look like head={guess!r})") from None


def params_to_hf(params: Mapping, cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, np.ndarray]:
    return hf.convert_to_hf(params, cfg, rules(cfg, check_head(head)), tied(head))


# ---------------------------------------------------------------- plmjax modules


def module_for(head: str = DEFAULT_HEAD) -> type:
    """The plmjax module class whose parameter tree `params_from_hf(..., head)` produces."""
    from plmjax.models import encoder

    return encoder.HEADS[check_head(head)]
