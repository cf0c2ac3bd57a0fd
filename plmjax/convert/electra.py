"""ELECTRA <-> plmjax encoder models: the discriminator and the generator, each on BERT's layer layout.

  head                               HF class               plmjax module
  replaced_token_detection (default) ElectraForPreTraining  EncoderForTokenDetection (the discriminator)
  masked_lm                          ElectraForMaskedLM     EncoderForMaskedLM (the generator)

HF ELECTRA is BERT's encoder under 'electra.' without a pooler. Its word, position and segment embeddings
and their LayerNorm are `embedding_size` E wide; when E != hidden_size H, `electra.embeddings_project` (E ->
H, after the embedding LayerNorm and dropout; the key exists only then) is plmjax's
'encoder/embedder/projection'. `discriminator_predictions` (dense H -> H, hidden_act, dense_prediction H ->
1) is plmjax's TokenDetectionHead; `generator_predictions` (dense H -> E, gelu whatever hidden_act says,
LayerNorm) plus `generator_lm_head` (the word embeddings, tied, plus its own bias) is plmjax's MaskedLMHead.

A plmjax ELECTRA training run (ReplacedTokenDetection: a discriminator and a narrower generator sharing
the embeddings) exports as one model of each head: see plmjax.convert.release.export_hf. ElectraModel and
the fine-tuning classes (sequence / token classification, QA, multiple choice, causal LM) are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from plmjax import config as config_lib
from plmjax.config import ModelConfig
from plmjax.convert import bert, hf

# Known-unused buffers of older checkpoints (the position / segment id ranges).
IGNORED = (r"(electra\.)?embeddings\.position_ids", r"(electra\.)?embeddings\.token_type_ids")

# alias -> canonical (masked_lm head only): the generator's output layer is the word embeddings; its
# bias (generator_lm_head.bias) is a parameter of its own (plmjax's mlm_head/bias).
TIED = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

DEFAULT_HEAD = "replaced_token_detection"

# The objective a converted head trains with (release.base_config): the discriminator, ELECTRA's.
HEAD_OBJECTIVES = {"replaced_token_detection": "replaced_token_detection"}

# HF class (config.architectures entry) -> head.
ARCHITECTURES = {
    "ElectraForPreTraining": "replaced_token_detection",
    "ElectraForMaskedLM": "masked_lm",
}

# The HF classes plmjax has no counterpart for, by a key only their checkpoints hold.
UNSUPPORTED = {
    "sequence_summary.summary.weight": "ElectraForMultipleChoice",
    "classifier.dense.weight": "ElectraForSequenceClassification",
    "classifier.weight": "ElectraForTokenClassification",
    "qa_outputs.weight": "ElectraForQuestionAnswering",
}


def config_from_hf(d: Mapping[str, Any]) -> ModelConfig:
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"ELECTRA position_embedding_type={d['position_embedding_type']!r} is not supported (absolute only)"
        )
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise ValueError("ELECTRA used as a decoder (is_decoder / add_cross_attention: ElectraForCausalLM) "
                         "is not supported")
    if not d.get("tie_word_embeddings", True):
        raise ValueError("ELECTRA tie_word_embeddings=False is not supported: plmjax's generator head is tied "
                         "to the word embeddings")
    E, H = d.get("embedding_size", 128), d["hidden_size"]
    return config_lib.electra(**bert.encoder_fields(d), embedding_size=0 if E == H else E).model


def config_to_hf(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, Any]:
    architecture = hf.architecture("electra", check_head(head))
    return {"model_type": "electra", "architectures": [architecture], **bert.encoder_keys(cfg),
            "embedding_size": cfg.emb_dim, "tie_word_embeddings": True}


# ---------------------------------------------------------------- rules


def encoder_rules(cfg: ModelConfig) -> list[hf.Rule]:
    """`electra.embeddings.*` (E wide), `electra.embeddings_project` (only when E != H) and the BERT layers."""
    out = bert.embedding_rules(cfg, "electra.")
    if cfg.emb_dim != cfg.hidden_size:
        out += hf.dense("electra.embeddings_project", "encoder/embedder/projection", (cfg.emb_dim,), (cfg.hidden_size,))
    for i in range(cfg.num_layers):
        out += bert.layer_rules(cfg, f"electra.encoder.layer.{i}", f"encoder/stack/layers_{i}")
    return out


def _replaced_token_detection(cfg: ModelConfig) -> list[hf.Rule]:
    H = cfg.hidden_size
    return (hf.dense("discriminator_predictions.dense", "discriminator_head/dense", (H,), (H,))
            + hf.dense("discriminator_predictions.dense_prediction", "discriminator_head/prediction", (H,), (1,)))


def _masked_lm(cfg: ModelConfig) -> list[hf.Rule]:
    if cfg.activation != "gelu":  # ElectraGeneratorPredictions applies GELU whatever hidden_act says
        raise ValueError(f"ElectraForMaskedLM's generator head applies gelu; plmjax's would apply "
                         f"model.activation={cfg.activation!r}")
    return bert.mlm_head_rules(cfg, "generator_predictions.dense", "generator_predictions.LayerNorm",
                               "generator_lm_head.bias")


HEADS: dict[str, Callable[[ModelConfig], list[hf.Rule]]] = {
    "replaced_token_detection": _replaced_token_detection,
    "masked_lm": _masked_lm,
}


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"unknown ELECTRA head {head!r}; supported: {', '.join(HEADS)} "
                         f"({', '.join(ARCHITECTURES)})")
    return head


def rules(cfg: ModelConfig, head: str = DEFAULT_HEAD) -> list[hf.Rule]:
    head_rules = HEADS[check_head(head)]
    return encoder_rules(cfg) + head_rules(cfg)


def tied(head: str) -> dict[str, str]:
    return dict(TIED) if head == "masked_lm" else {}


# ---------------------------------------------------------------- state dicts


def guess_head(state_dict: Mapping[str, Any]) -> str | None:
    """The head an HF ELECTRA state dict carries, from its keys."""
    keys = set(state_dict)
    if "discriminator_predictions.dense.weight" in keys:
        return "replaced_token_detection"
    if "generator_predictions.dense.weight" in keys or "generator_lm_head.bias" in keys:
        return "masked_lm"
    return None


def unsupported_class(state_dict: Mapping[str, Any]) -> str | None:
    """The HF ELECTRA class without a plmjax counterpart that a state dict's keys say it comes from, if any."""
    if guess_head(state_dict) is not None:
        return None
    for key, name in UNSUPPORTED.items():
        if key in state_dict:
            return name
    if state_dict and not any(k.startswith("electra.") for k in state_dict):
        return "ElectraModel"
    return None


def params_from_hf(state_dict: Mapping[str, Any], cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict:
    check_head(head)
    name = unsupported_class(state_dict)
    if name is not None:
        raise ValueError(f"the state dict looks like an HF {name}, which has no plmjax counterpart; plmjax "
                         f"converts {', '.join(f'{a} (head {h!r})' for a, h in ARCHITECTURES.items())}")
    try:
        return hf.convert_from_hf(state_dict, cfg, rules(cfg, head), tied(head), IGNORED)
    except ValueError as e:
        guess = guess_head(state_dict)
        if guess is None or guess == head or not str(e).startswith("cannot convert the HF state dict"):
            raise
        raise ValueError(f"{e}\n(converting with head={head!r}, but the keys look like head={guess!r})") from None


def params_to_hf(params: Mapping, cfg: ModelConfig, head: str = DEFAULT_HEAD) -> dict[str, np.ndarray]:
    return hf.convert_to_hf(params, cfg, rules(cfg, check_head(head)), tied(head))


def module_for(head: str = DEFAULT_HEAD) -> type:
    """The plmjax module class whose parameter tree `params_from_hf(..., head)` produces."""
    from plmjax.models import encoder

    return encoder.HEADS[check_head(head)]
