"""DeBERTa v2/v3 (HF model_type "deberta-v2") <-> plmjax encoder models with disentangled attention.

  head                     HF class                             plmjax module
  masked_lm (default)      DebertaV2ForMaskedLM                 EncoderForMaskedLM
  sequence_classification  DebertaV2ForSequenceClassification   EncoderForSequenceClassification
  token_classification     DebertaV2ForTokenClassification      EncoderForTokenClassification
  span_extraction          DebertaV2ForQuestionAnswering        EncoderForSpanExtraction
  encoder                  DebertaV2Model (no pooler)           EncoderStates

HF's DebertaV2 layers are BERT's with `query_proj`/`key_proj`/`value_proj`, plus `pos_key_proj` (c2p) and
`pos_query_proj` (p2c) unless share_att_key; `encoder.rel_embeddings` and `encoder.LayerNorm` (norm_rel_ebd) are
plmjax's 'attention_shared' table and norm, `encoder.conv` (conv_kernel_size > 0) its InputConvolution.
ContextPooler (dense, then pooler_hidden_act) is plmjax's pooler with model.pooler_activation. The MLM head is
read in either naming (legacy `cls.predictions.*` or `lm_predictions.lm_head.*`, as DeBERTa v3's checkpoints
have) and written in HF's default (legacy). Refused: an embedding_size other than hidden_size (HF projects
the embeddings before their LayerNorm, plmjax after) and a pooler_hidden_size other than hidden_size.

DeBERTa v1 (model_type "deberta", microsoft/deberta-base and -large) is converted by deberta_v1.py onto the same
plmjax model: it shares this module's config mapping, embeddings, relative table and heads, and swaps in its own
layer rules (a `Variant`) for its fused `in_proj` without a key bias and its bias-free `pos_proj`.
Dropout-only keys (pooler_dropout, cls_dropout) are ignored: they do not change what a model computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from plmjax import config as config_lib
from plmjax.config import ModelConfig
from plmjax.convert import bert, hf

MODEL_TYPE = "deberta-v2"
IGNORED = (r"(deberta\.)?embeddings\.position_ids", r"(deberta\.)?embeddings\.token_type_ids",
           r"mask_predictions\..*")  # v3's replaced-token-detection head, which HF ignores too

DEFAULT_HEAD = "masked_lm"
HEAD_OBJECTIVES = {"masked_lm": "mlm"}

ARCHITECTURES = {
    "DebertaV2ForMaskedLM": "masked_lm",
    "DebertaV2ForSequenceClassification": "sequence_classification",
    "DebertaV2ForTokenClassification": "token_classification",
    "DebertaV2ForQuestionAnswering": "span_extraction",
    "DebertaV2Model": "encoder",
}

LAYER_NAMES = {**bert.LAYER_NAMES, "query": "attention.self.query_proj", "key": "attention.self.key_proj",
               "value": "attention.self.value_proj"}

# MLM head naming -> (transform dense, its LayerNorm, output bias)
MLM_NAMES = {
    "legacy": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    "lm_predictions": ("lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm",
                       "lm_predictions.lm_head.bias"),
}
TIED = {"cls.predictions.decoder.weight": "deberta.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias"}


def _terms(value) -> str:
    if value is None:
        return ""
    parts = value.split("|") if isinstance(value, str) else list(value)
    return ",".join(p.strip().lower() for p in parts if p.strip())


def config_from_hf(d: Mapping[str, Any]) -> ModelConfig:
    H = d["hidden_size"]
    if d.get("embedding_size", H) not in (None, H):
        raise ValueError(f"DeBERTa embedding_size={d['embedding_size']} != hidden_size={H} is not supported: HF "
                         "projects the embeddings before their LayerNorm, plmjax after it")
    if d.get("pooler_hidden_size", H) != H:
        raise ValueError(f"DeBERTa pooler_hidden_size={d['pooler_hidden_size']} != hidden_size={H} is not supported")
    relative = bool(d.get("relative_attention", False))
    if _terms(d.get("pos_att_type")) and not relative:
        raise ValueError(f"HF DeBERTa pos_att_type={d['pos_att_type']!r} without relative_attention is not "
                         "supported: HF still divides the attention scores by sqrt(head_size * (1 + "
                         "len(pos_att_type))), plmjax's softmax attention by sqrt(head_size)")
    fields = bert.encoder_fields({**d, "type_vocab_size": d.get("type_vocab_size", 0),
                                  "layer_norm_eps": d.get("layer_norm_eps", 1e-7)})
    head_size = d.get("attention_head_size")
    fields.update(
        head_dim=0 if head_size in (None, H // d["num_attention_heads"]) else head_size,
        attention_kind="disentangled" if relative else "softmax",
        position_kind="learned" if d.get("position_biased_input", True) else "none",
        position_terms=_terms(d.get("pos_att_type")) if relative else "",
        position_buckets=max(d.get("position_buckets", -1), 0) if relative else 0,
        max_relative_positions=max(d.get("max_relative_positions", -1), 0) if relative else 0,
        share_position_keys=bool(d.get("share_att_key", False)) and relative,
        norm_relative_embeddings=relative and "layer_norm" in _terms(d.get("norm_rel_ebd", "none")).split(","),
        conv_kernel_size=d.get("conv_kernel_size", 0),
        conv_groups=d.get("conv_groups", 1) if d.get("conv_kernel_size", 0) else 1,
        conv_activation=hf.activation_from_hf(d.get("conv_act", "tanh"), "conv_act")
        if d.get("conv_kernel_size", 0) else "tanh",
        pooler_activation=hf.activation_from_hf(d.get("pooler_hidden_act", "gelu"), "pooler_hidden_act"),
    )
    return config_lib.deberta(**fields).model


def config_to_hf(cfg: ModelConfig, head: str = DEFAULT_HEAD, variant: Variant | None = None) -> dict[str, Any]:
    variant = variant or V2
    relative = cfg.attention_kind == "disentangled"
    if cfg.attention_kind not in ("disentangled", "softmax"):
        raise ValueError(f"HF DeBERTa cannot express model.attention_kind={cfg.attention_kind!r}")
    d = {"model_type": variant.model_type,
         "architectures": [hf.architecture(variant.model_type, check_head(head, variant))],
         **bert.encoder_keys(cfg),
         "relative_attention": relative,
         "position_biased_input": cfg.position_kind == "learned" and cfg.position_input,
         "pos_att_type": list(cfg.relative_terms) if relative else None,
         "max_relative_positions": cfg.max_relative_positions or -1,
         "pooler_hidden_size": cfg.hidden_size, "pooler_hidden_act": hf.activation_to_hf(cfg.pooler_activation),
         "pooler_dropout": 0, "legacy": True}
    return {**d, **variant.config_keys(cfg)}


def _v2_config_keys(cfg: ModelConfig) -> dict[str, Any]:
    """The keys only DebertaV2Config has: buckets, shared position keys, the table's norm, head size, convolution."""
    d = {"position_buckets": cfg.position_buckets or -1, "share_att_key": cfg.share_position_keys,
         "norm_rel_ebd": "layer_norm" if cfg.norm_relative_embeddings else "none"}
    if cfg.head_dim:
        d["attention_head_size"] = cfg.head_dim
    if cfg.conv_kernel_size:
        d.update(conv_kernel_size=cfg.conv_kernel_size, conv_groups=cfg.conv_groups,
                 conv_act=hf.activation_to_hf(cfg.conv_activation))
    return d


# ---------------------------------------------------------------- rules


def encoder_rules(cfg: ModelConfig, prefix: str = "deberta.", variant: Variant | None = None) -> list[hf.Rule]:
    """Embeddings, the relative-position table and its norm, the convolution and the variant's layers."""
    H = cfg.hidden_size
    emb = f"{prefix}embeddings"
    out = [hf.copy(f"{emb}.word_embeddings.weight", "encoder/embedder/token/embedding", (cfg.vocab_size, H))]
    if cfg.position_kind == "learned":
        out.append(hf.copy(f"{emb}.position_embeddings.weight", "encoder/embedder/position/embedding",
                           (cfg.max_length, H)))
    if cfg.type_vocab_size:
        out.append(hf.copy(f"{emb}.token_type_embeddings.weight", "encoder/embedder/segment/embedding",
                           (cfg.type_vocab_size, H)))
    out += hf.layer_norm(f"{emb}.LayerNorm", "encoder/embedder/norm", H)
    stack, enc = "encoder/stack", f"{prefix}encoder"
    if cfg.attention_kind == "disentangled":
        from plmjax.layers.disentangled import span

        out.append(hf.copy(f"{enc}.rel_embeddings.weight", f"{stack}/attention_shared/embedding",
                           (2 * span(cfg), H)))
        if cfg.norm_relative_embeddings:
            out += hf.layer_norm(f"{enc}.LayerNorm", f"{stack}/attention_shared/norm", H)
    if cfg.conv_kernel_size:
        k, per_group = cfg.conv_kernel_size, H // cfg.conv_groups
        out.append(hf.Rule(f"{enc}.conv.conv.weight", (f"{stack}/conv/kernel",), (H, per_group, k),
                           lambda w: (np.transpose(w, (2, 1, 0)),), lambda kernel: np.transpose(kernel, (2, 1, 0))))
        out += [hf.copy(f"{enc}.conv.conv.bias", f"{stack}/conv/bias", (H,))]
        out += hf.layer_norm(f"{enc}.conv.LayerNorm", f"{stack}/conv/norm", H)
    for i in range(cfg.num_layers):
        out += (variant or V2).layer_rules(cfg, f"{enc}.layer.{i}", f"{stack}/layers_{i}")
    return out


def layer_rules(cfg: ModelConfig, src: str, dst: str) -> list[hf.Rule]:
    """One DebertaV2Layer: BERT's with `*_proj` names, plus its own position projections unless share_att_key."""
    out = bert.layer_rules(cfg, src, dst, LAYER_NAMES)
    if cfg.attention_kind == "disentangled" and not cfg.share_position_keys:
        for term, hf_name, ours in (("c2p", "pos_key_proj", "position_key"),
                                    ("p2c", "pos_query_proj", "position_query")):
            if term in cfg.relative_terms:
                out += hf.dense(f"{src}.attention.self.{hf_name}", f"{dst}/self_attention/kernel/{ours}",
                                (cfg.hidden_size,), (cfg.num_heads, cfg.kv_dim))
    return out


@dataclasses.dataclass(frozen=True)
class Variant:
    """What differs between the DeBERTa generations this module converts: the HF model_type and classes, the
    layer's parameterisation and the config keys only that generation has."""

    model_type: str
    architectures: Mapping[str, str]
    layer_rules: Callable[[ModelConfig, str, str], list[hf.Rule]]
    config_keys: Callable[[ModelConfig], dict[str, Any]]


V2 = Variant(MODEL_TYPE, ARCHITECTURES, layer_rules, _v2_config_keys)


def _masked_lm(cfg: ModelConfig, naming: str = "legacy") -> list[hf.Rule]:
    return bert.mlm_head_rules(cfg, *MLM_NAMES[naming])


def _sequence_classification(cfg: ModelConfig) -> list[hf.Rule]:
    H = cfg.hidden_size
    return hf.dense("pooler.dense", "pooler/dense", (H,), (H,)) + hf.dense("classifier", "classifier", (H,),
                                                                           (cfg.num_labels,))


def _token_classification(cfg: ModelConfig) -> list[hf.Rule]:
    return hf.dense("classifier", "classifier", (cfg.hidden_size,), (cfg.num_labels,))


def _span_extraction(cfg: ModelConfig) -> list[hf.Rule]:
    return hf.dense("qa_outputs", "qa_outputs", (cfg.hidden_size,), (2,))


HEADS: dict[str, tuple[str, Callable[[ModelConfig], list[hf.Rule]]]] = {
    "masked_lm": ("deberta.", _masked_lm),
    "sequence_classification": ("deberta.", _sequence_classification),
    "token_classification": ("deberta.", _token_classification),
    "span_extraction": ("deberta.", _span_extraction),
    "encoder": ("", lambda cfg: []),
}


def check_head(head: str, variant: Variant | None = None) -> str:
    if head not in HEADS:
        raise ValueError(f"unknown DeBERTa head {head!r}; supported: {', '.join(HEADS)} "
                         f"({', '.join((variant or V2).architectures)})")
    return head


def rules(cfg: ModelConfig, head: str = DEFAULT_HEAD, naming: str = "legacy",
          variant: Variant | None = None) -> list[hf.Rule]:
    prefix, head_rules = HEADS[check_head(head, variant)]
    extra = _masked_lm(cfg, naming) if head == "masked_lm" else head_rules(cfg)
    return encoder_rules(cfg, prefix, variant) + extra


def tied(head: str) -> dict[str, str]:
    return dict(TIED) if head == "masked_lm" else {}


# ---------------------------------------------------------------- state dicts


def guess_head(state_dict: Mapping[str, Any]) -> str | None:
    """The head an HF DeBERTa state dict carries, from its keys."""
    keys = set(state_dict)
    if "cls.predictions.bias" in keys or "lm_predictions.lm_head.bias" in keys:
        return "masked_lm"
    if "qa_outputs.weight" in keys:
        return "span_extraction"
    if "classifier.weight" in keys:
        return "sequence_classification" if "pooler.dense.weight" in keys else "token_classification"
    if keys and not any(k.startswith("deberta.") for k in keys):
        return "encoder"
    return None


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig, head: str = DEFAULT_HEAD,
                   variant: Variant | None = None) -> dict:
    check_head(head, variant)
    naming = "lm_predictions" if "lm_predictions.lm_head.bias" in state_dict else "legacy"
    ignored = IGNORED
    if cfg.position_kind != "learned":  # v3 checkpoints keep a position table that HF ignores
        ignored += (r"(deberta\.)?embeddings\.position_embeddings\.weight",)
    try:
        return hf.convert_from_hf(state_dict, cfg, rules(cfg, head, naming, variant), tied(head), ignored)
    except ValueError as e:
        guess = guess_head(state_dict)
        if guess is None or guess == head or not str(e).startswith("cannot convert the HF state dict"):
            raise
        raise ValueError(f"{e}\n(converting with head={head!r}, but the keys look like head={guess!r})") from None


def params_to_hf(params: Mapping, cfg: ModelConfig, head: str = DEFAULT_HEAD,
                 variant: Variant | None = None) -> dict[str, np.ndarray]:
    return hf.convert_to_hf(params, cfg, rules(cfg, check_head(head, variant), variant=variant), tied(head))


def module_for(head: str = DEFAULT_HEAD) -> type:
    """The plmjax module class whose parameter tree `params_from_hf(..., head)` produces."""
    from plmjax.models import encoder

    return encoder.HEADS[check_head(head)]

