"""ALBERT <-> plmjax encoder models: factorized embeddings and one layer shared by every depth.

plmjax's ALBERT is a config of its BERT-style encoder: `model.embedding_size` E < hidden_size H
gives the E-wide word, position and segment embeddings, their LayerNorm, and then the E -> H
projection 'encoder/embedder/projection' (HF `encoder.embedding_hidden_mapping_in`, applied once
after the embedding LayerNorm and dropout); `model.shared_layer_groups=1` makes every layer run
'encoder/stack/layers_0' (HF `encoder.albert_layer_groups.0.albert_layers.0`). Every released
ALBERT has num_hidden_groups=1 and inner_group_num=1; other values are refused: HF assigns layer i
to group int(i / (L / G)) (contiguous blocks) where plmjax cycles (i % G), and plmjax has no
inner repetition. The shared layer cannot be scanned (model.scan_layers), nor can an HF ALBERT
with embedding_size == hidden_size be expressed (HF still applies its E -> H mapping; plmjax only
has the projection when the widths differ).

  head                     HF class                          plmjax module
  pretraining (default)    AlbertForPreTraining              EncoderForPretraining
  masked_lm                AlbertForMaskedLM (no pooler)     EncoderForMaskedLM
  sequence_classification  AlbertForSequenceClassification   EncoderForSequenceClassification
  token_classification     AlbertForTokenClassification      EncoderForTokenClassification
  span_extraction          AlbertForQuestionAnswering        EncoderForSpanExtraction
  none                     AlbertModel (with its pooler)     EncoderModel

AlbertModel's keys have no 'albert.' prefix; the other classes keep the encoder under 'albert.', and
their heads at the top level: `predictions.*` (AlbertMLMHead: dense H -> E, hidden_act, LayerNorm
with layer_norm_eps (as transformers builds it now; early versions used torch's 1e-5), decoder tied to the
word embeddings plus `predictions.bias`) is plmjax's MaskedLMHead; the pooler is a bare Linear
`albert.pooler` (+ tanh), plmjax's 'pooler/dense'; the sentence-order head
`sop_classifier.classifier` is plmjax's 'nsp_head' (its sentence-pair head; a converted ALBERT trains it on
sentence order, objective.kind=sop).

Differences that do not change an eval-mode forward pass: HF ALBERT has no dropout on the FFN
output (plmjax's post-LN layer has, at model.dropout_rate; 0 in the v2 releases), and its
classifier dropout is classifier_dropout_prob where plmjax's classification heads use
model.dropout_rate.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from plmjax import config as config_lib
from plmjax.config import ModelConfig
from plmjax.convert import bert, hf

# Known-unused buffers of older checkpoints (the position / segment id ranges).
IGNORED = (r"(albert\.)?embeddings\.position_ids", r"(albert\.)?embeddings\.token_type_ids")

# The heads whose HF class builds AlbertModel(add_pooling_layer=False): a pooler in their checkpoint
# (one saved by an old AlbertForMaskedLM, or a pretraining checkpoint loaded as one) is dropped, as
# transformers drops it; it is not part of what these models compute.
NO_POOLER_IGNORED = (r"albert\.pooler\.(weight|bias)",)

# alias -> canonical (the MLM heads only): the MLM decoder is tied to the word embeddings, its bias
# to predictions.bias.
TIED = {
    "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
    "predictions.decoder.bias": "predictions.bias",
}

DEFAULT_HEAD = "pretraining"

# The objective a converted head trains with (release.base_config): ALBERT's n-gram MLM + sentence order.
HEAD_OBJECTIVES = {"pretraining": "sop"}

# HF class (config.architectures entry) -> head.
ARCHITECTURES = {
    "AlbertForPreTraining": "pretraining",
    "AlbertForMaskedLM": "masked_lm",
    "AlbertForSequenceClassification": "sequence_classification",
    "AlbertForTokenClassification": "token_classification",
    "AlbertForQuestionAnswering": "span_extraction",
    "AlbertModel": "none",
}


def config_from_hf(d: Mapping[str, Any]) -> ModelConfig:
    for key in ("num_hidden_groups", "inner_group_num"):
        if d.get(key, 1) != 1:
            raise ValueError(
                f"ALBERT {key}={d[key]} is not supported: plmjax shares one layer across all depths "
                f"(model.shared_layer_groups=1), as every released ALBERT does ({key}=1)"
            )
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"ALBERT position_embedding_type={d['position_embedding_type']!r} is not supported (absolute only)"
        )
    if not d.get("tie_word_embeddings", True):
        raise ValueError("ALBERT tie_word_embeddings=False is not supported: plmjax's MLM head is tied")
    E, H = d.get("embedding_size", 128), d["hidden_size"]
    if E == H:
        raise ValueError(
            f"ALBERT embedding_size={E} equal to hidden_size is not supported: HF still maps the embeddings "
            "through encoder.embedding_hidden_mapping_in, a projection plmjax has only when the widths differ"
        )
    return config_lib.bert(**bert.encoder_fields(d, dropout=0.0, activation="gelu_new"), embedding_size=E,
                           shared_layer_groups=1).model


def config_to_hf(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, Any]:
    _check_expressible(cfg)
    architecture = hf.architecture("albert", check_head(head))
    return {"model_type": "albert", "architectures": [architecture], **bert.encoder_keys(cfg),
            "embedding_size": cfg.emb_dim, "num_hidden_groups": 1, "inner_group_num": 1}


def _check_expressible(cfg: ModelConfig) -> None:
    """What HF ALBERT (with the one group every release has) cannot hold; the rest config_to_hf's round trip checks."""
    if cfg.shared_layer_groups != 1:
        raise ValueError(f"HF albert cannot express model.shared_layer_groups={cfg.shared_layer_groups}: "
                         "the conversion supports one layer shared by all depths (shared_layer_groups=1)")
    if cfg.emb_dim == cfg.hidden_size:
        raise ValueError(f"HF albert cannot express model.embedding_size={cfg.embedding_size} (= hidden_size): "
                         "HF always maps the embeddings through a projection, plmjax has one only when "
                         "model.embedding_size < hidden_size")


# ---------------------------------------------------------------- rules

# plmjax layer parameter -> HF name under `{prefix}encoder.albert_layer_groups.0.albert_layers.0.`
LAYER_NAMES = {
    "query": "attention.query",
    "key": "attention.key",
    "value": "attention.value",
    "out": "attention.dense",
    "self_attention_norm": "attention.LayerNorm",
    "wi": "ffn",
    "wo": "ffn_output",
    "mlp_norm": "full_layer_layer_norm",
}


def encoder_rules(cfg: ModelConfig, prefix: str = "albert.") -> list[hf.Rule]:
    """Embeddings, the E -> H mapping and the one shared layer <-> plmjax 'encoder/...'."""
    if cfg.scan_layers:
        raise ValueError("model.scan_layers cannot hold ALBERT's shared layer (model.shared_layer_groups=1); "
                         "convert with model.scan_layers=false")
    _check_expressible(cfg)
    return (
        bert.embedding_rules(cfg, prefix)
        + hf.dense(f"{prefix}encoder.embedding_hidden_mapping_in", "encoder/embedder/projection",
                   (cfg.emb_dim,), (cfg.hidden_size,))
        + bert.layer_rules(cfg, f"{prefix}encoder.albert_layer_groups.0.albert_layers.0", "encoder/stack/layers_0",
                           LAYER_NAMES)
    )


def _pooler(cfg: ModelConfig, prefix: str = "albert.") -> list[hf.Rule]:
    return hf.dense(f"{prefix}pooler", "pooler/dense", (cfg.hidden_size,), (cfg.hidden_size,))


def _masked_lm(cfg: ModelConfig) -> list[hf.Rule]:
    return bert.mlm_head_rules(cfg, "predictions.dense", "predictions.LayerNorm", "predictions.bias")


def _pretraining(cfg: ModelConfig) -> list[hf.Rule]:
    return _pooler(cfg) + _masked_lm(cfg) + hf.dense("sop_classifier.classifier", "nsp_head", (cfg.hidden_size,), (2,))


def _sequence_classification(cfg: ModelConfig) -> list[hf.Rule]:
    return _pooler(cfg) + hf.dense("classifier", "classifier", (cfg.hidden_size,), (cfg.num_labels,))


def _none(cfg: ModelConfig) -> list[hf.Rule]:
    return _pooler(cfg, prefix="")


# head -> (HF prefix of the encoder, the head's extra rules)
HEADS: dict[str, tuple[str, Callable[[ModelConfig], list[hf.Rule]]]] = {
    "pretraining": ("albert.", _pretraining),
    "masked_lm": ("albert.", _masked_lm),
    "sequence_classification": ("albert.", _sequence_classification),
    "token_classification": ("albert.", bert.HEADS["token_classification"][1]),
    "span_extraction": ("albert.", bert.HEADS["span_extraction"][1]),
    "none": ("", _none),
}


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"unknown ALBERT head {head!r}; supported: {', '.join(HEADS)}")
    return head


def rules(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> list[hf.Rule]:
    prefix, head_rules = HEADS[check_head(head)]
    return encoder_rules(cfg, prefix) + head_rules(cfg)


def tied(head: str) -> dict[str, str]:
    return dict(TIED) if head in ("pretraining", "masked_lm") else {}


def ignored(head: str) -> tuple[str, ...]:
    return IGNORED + (NO_POOLER_IGNORED if head in ("masked_lm", "token_classification", "span_extraction") else ())


# ---------------------------------------------------------------- state dicts


def guess_head(state_dict: Mapping[str, Any]) -> str | None:
    """The head an HF ALBERT state dict carries, from its keys (hub albert-base-v2 says AlbertForMaskedLM)."""
    keys = set(state_dict)
    if "sop_classifier.classifier.weight" in keys:
        return "pretraining"
    if "predictions.bias" in keys:
        return "masked_lm"
    if "qa_outputs.weight" in keys:
        return "span_extraction"
    if "classifier.weight" in keys:
        return "sequence_classification" if "albert.pooler.weight" in keys else "token_classification"
    if keys and not any(k.startswith(("albert.", "predictions.", "sop_classifier.")) for k in keys):
        return "none"
    return None


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict:
    check_head(head)
    if head == "none" and state_dict and all(k.startswith("albert.") for k in state_dict):
        state_dict = {k.removeprefix("albert."): v for k, v in state_dict.items()}
    try:
        return hf.convert_from_hf(state_dict, cfg, rules(cfg, head), tied(head), ignored(head))
    except ValueError as e:
        guess = guess_head(state_dict)
        if guess is None or guess == head or not str(e).startswith("cannot convert the HF state dict"):
            raise
        raise ValueError(f"{e}\n(converting with head={head!r}, but the keys look like head={guess!r})") from None


def params_to_hf(params: Mapping, cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, np.ndarray]:
    return hf.convert_to_hf(params, cfg, rules(cfg, check_head(head)), tied(head))


def module_for(head: str = DEFAULT_HEAD) -> type:
    return bert.module_for(check_head(head))
