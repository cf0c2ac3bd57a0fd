"""DeBERTa v1 (HF model_type "deberta": microsoft/deberta-base, -large) <-> plmjax encoder models with
disentangled attention, both ways.

  head                     HF class                           plmjax module
  masked_lm (default)      DebertaForMaskedLM                 EncoderForMaskedLM
  sequence_classification  DebertaForSequenceClassification   EncoderForSequenceClassification
  token_classification     DebertaForTokenClassification      EncoderForTokenClassification
  span_extraction          DebertaForQuestionAnswering        EncoderForSpanExtraction
  encoder                  DebertaModel (no pooler)           EncoderStates

v1 computes what v2 does with exact relative positions, its own position projections, no rel-embedding norm and no
convolution; only its layer's parameters are laid out differently, so deberta.py's config mapping, embeddings,
relative table and heads serve it, with this module's layer rules (`V1`):

  HF DisentangledSelfAttention          plmjax self_attention
  in_proj.weight [heads*3*d, H]         query/kernel, key/kernel, value/kernel [H, heads, d]: rows interleaved per
                                        head (head 0's q, k, v rows, then head 1's, ...), as HF chunks them
  q_bias, v_bias [heads*d]              query/bias, value/bias
  (no key bias)                         key/bias: zeros
  pos_proj.weight (c2p, no bias)        kernel/position_key/kernel; kernel/position_key/bias: zeros
  pos_q_proj.weight/.bias (p2c)         kernel/position_query/kernel, bias

HF scales the query (and p2c's position query) by 1/sqrt(d * (1 + len(pos_att_type))) before the dot products,
plmjax the summed logits by the same factor. HF slices rel_embeddings to the rows [max_rel - span, max_rel + span)
for span = min(sequence length, max_rel) and clamps offset + span into them: the rows plmjax's clamp(offset +
max_rel, 0, 2 * max_rel - 1) picks, since offsets stay within +-(length - 1). HF v1 ignores v2's keys
(attention_head_size, position_buckets, share_att_key, norm_rel_ebd, conv_*), and so does this reading. Refused:
talking_head (heads mixed before and after the softmax), a pos_att_type without relative_attention (HF still
divides by sqrt(d * (1 + len(pos_att_type)))), and, writing back, a nonzero key bias with p2c, which HF v1 has no
tensor for. A position-key bias, or a key bias without p2c, only adds a per-query constant to the logits, which the
softmax cancels: it is left out (a plmjax fine-tuning run moves them by float noise). `hf.model_type_for` still
exports plmjax-made DeBERTa models as "deberta-v2"; a converted v1 release keeps model_type "deberta" through its
stored hf_config.json.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from plmjax.config import ModelConfig
from plmjax.convert import bert, deberta, hf

MODEL_TYPE = "deberta"
DEFAULT_HEAD = deberta.DEFAULT_HEAD
HEAD_OBJECTIVES = deberta.HEAD_OBJECTIVES
HEADS = deberta.HEADS

ARCHITECTURES = {
    "DebertaForMaskedLM": "masked_lm",
    "DebertaForSequenceClassification": "sequence_classification",
    "DebertaForTokenClassification": "token_classification",
    "DebertaForQuestionAnswering": "span_extraction",
    "DebertaModel": "encoder",
}

# DebertaV2Config keys that DebertaConfig does not have and HF's v1 model never reads.
V2_ONLY = ("attention_head_size", "position_buckets", "share_att_key", "norm_rel_ebd", "conv_kernel_size",
           "conv_groups", "conv_act")

guess_head = deberta.guess_head
module_for = deberta.module_for
tied = deberta.tied


def config_from_hf(d: Mapping[str, Any]) -> ModelConfig:
    if d.get("talking_head"):
        raise ValueError("HF DeBERTa talking_head=true is not supported: it mixes the attention heads' scores and "
                         "weights (head_logits_proj, head_weights_proj), which plmjax's attention keeps apart")
    return deberta.config_from_hf({k: v for k, v in d.items() if k not in V2_ONLY})


def config_to_hf(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, Any]:
    """What v1 cannot hold (buckets, shared position keys, ...) is refused by hf.config_to_hf's round trip."""
    return deberta.config_to_hf(cfg, head, V1)


# ---------------------------------------------------------------- rules


def _bias_free(rule: hf.Rule, bias_path: str, bias_shape: tuple[int, ...], what: str, cancels: bool) -> hf.Rule:
    """`rule` that also gives plmjax's bias at `bias_path` zeros. Writing back, a bias whose only effect is a
    per-query constant on the logits (`cancels`: the softmax removes it) is left out, as it changes nothing; any
    other nonzero one is refused."""

    def to_hf(*arrays):
        *weights, bias = arrays
        bias = np.asarray(bias)
        if not cancels and np.any(bias != 0):
            where = np.unravel_index(np.argmax(np.abs(bias)), bias.shape)
            raise ValueError(f"cannot write {bias_path} to HF DeBERTa v1 ({rule.key.rsplit('.', 1)[0]}): {what} has "
                             f"no bias, but this one is nonzero (max |bias| = {np.abs(bias).max():.6g} at "
                             f"[{', '.join(map(str, where))}], {np.count_nonzero(bias)} of {bias.size} nonzero) "
                             "and changes the p2c scores")
        return rule.to_hf(*weights)

    return hf.Rule(rule.key, rule.paths + (bias_path,), rule.shape,
                   lambda w: (*rule.to_ours(w), np.zeros(bias_shape, np.float32)), to_hf)


def _in_proj(cfg: ModelConfig, key: str, ours: str) -> hf.Rule:
    """HF `in_proj.weight` [heads * 3 * d, H] (per head: its query, key and value rows) <-> the three kernels."""
    H, heads, hd = cfg.hidden_size, cfg.num_heads, cfg.kv_dim

    def split(w):
        return tuple(w.reshape(heads, 3, hd, H).transpose(1, 3, 0, 2))  # (q, k, v) kernels [H, heads, d]

    def join(q, k, v):
        return np.stack([q, k, v]).transpose(2, 0, 3, 1).reshape(heads * 3 * hd, H)

    return hf.Rule(key, tuple(f"{ours}/{n}/kernel" for n in ("query", "key", "value")), (heads * 3 * hd, H),
                   split, join)


def _vector(key: str, path: str, cfg: ModelConfig) -> hf.Rule:
    """A per-head bias stored flat in HF [heads * d] <-> plmjax [heads, d]."""
    shape = (cfg.num_heads, cfg.kv_dim)
    return hf.Rule(key, (path,), (cfg.num_heads * cfg.kv_dim,), lambda b: (b.reshape(shape),),
                   lambda b: b.reshape(-1))


def layer_rules(cfg: ModelConfig, src: str, dst: str) -> list[hf.Rule]:
    """One DebertaLayer: BERT's output and FFN, v1's fused self-attention and position projections."""
    attn, ours = f"{src}.attention.self", f"{dst}/self_attention"
    heads = (cfg.num_heads, cfg.kv_dim)
    fused = tuple(f"{ours}/{n}/" for n in ("query", "key", "value"))
    out = [r for r in bert.layer_rules(cfg, src, dst) if not r.paths[0].startswith(fused)]
    # A key bias b adds q_i.b to every score of query i (cancelled by the softmax) and, with p2c, b.pq[r(i, j)]
    # (not cancelled); a position-key bias adds q_i.b to every c2p score of query i (cancelled).
    p2c = cfg.attention_kind == "disentangled" and "p2c" in cfg.relative_terms
    out += [_bias_free(_in_proj(cfg, f"{attn}.in_proj.weight", ours), f"{ours}/key/bias", heads, "in_proj's key",
                       cancels=not p2c),
            _vector(f"{attn}.q_bias", f"{ours}/query/bias", cfg), _vector(f"{attn}.v_bias", f"{ours}/value/bias", cfg)]
    if cfg.attention_kind == "disentangled":
        if "c2p" in cfg.relative_terms:
            (weight,) = hf.dense(f"{attn}.pos_proj", f"{ours}/kernel/position_key", (cfg.hidden_size,), heads,
                                 bias=False)
            out.append(_bias_free(weight, f"{ours}/kernel/position_key/bias", heads, "pos_proj (c2p position keys)",
                                  cancels=True))
        if "p2c" in cfg.relative_terms:
            out += hf.dense(f"{attn}.pos_q_proj", f"{ours}/kernel/position_query", (cfg.hidden_size,), heads)
    return out


V1 = deberta.Variant(MODEL_TYPE, ARCHITECTURES, layer_rules, lambda cfg: {})


def rules(cfg: ModelConfig, head: str = DEFAULT_HEAD, naming: str = "legacy") -> list[hf.Rule]:
    return deberta.rules(cfg, head, naming, V1)


# ---------------------------------------------------------------- state dicts


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict:
    return deberta.params_from_hf(state_dict, cfg, head, V1)


def params_to_hf(params: Mapping, cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, np.ndarray]:
    return deberta.params_to_hf(params, cfg, head, V1)
