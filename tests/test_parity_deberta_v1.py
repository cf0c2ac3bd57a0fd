"""DeBERTa v1 (HF model_type "deberta") against transformers: disentangled attention with c2p, p2c or both, absolute
positions in the input or not, a relative span under and over the sequence length, every head, the round trip back
to HF tensors (per-layer and scanned), `plmjax convert` both ways keeping model_type "deberta", the config's
defaults, and what must be refused (talking_head; a key or position-key bias HF v1 has no tensor for).

Shapes differ from every preset (vocab 99, 32 wide, 4 heads, 2 layers, FFN 40, 64 positions) and every HF
parameter is perturbed away from its init, so a swapped, transposed or blocked-instead-of-interleaved in_proj
cannot pass. Outputs are compared on real tokens: HF's padded queries attend uniformly, plmjax's to nothing.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from deberta_reference import TOL, assert_converts_both_ways, assert_parity, inputs
from hf_reference import maxdiff, perturbed, state_dict

from plmjax.convert import hf
from plmjax.models import encoder

BASE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=64, relative_attention=True)
# Sequences are 30 long: max_relative_positions -1 (64) and 20 slice HF's table to 2 * 30 rows; 6 clamps offsets.
CASES = {
    "base_like": dict(pos_att_type="c2p|p2c", position_biased_input=False),  # microsoft/deberta-base's switches
    "c2p_positions_in_input": dict(pos_att_type="c2p", position_biased_input=True, max_relative_positions=6,
                                   type_vocab_size=2),
    "p2c_list": dict(pos_att_type=["p2c"], position_biased_input=False, max_relative_positions=20),
    "both_positions_in_input": dict(pos_att_type=["p2c", "c2p"], position_biased_input=True, max_relative_positions=6),
    "relative_off": dict(relative_attention=False, position_biased_input=True),  # DebertaConfig's default
}
HEADS = {"masked_lm": "DebertaForMaskedLM", "sequence_classification": "DebertaForSequenceClassification",
         "token_classification": "DebertaForTokenClassification", "span_extraction": "DebertaForQuestionAnswering",
         "encoder": "DebertaModel"}


def _config(case: str, head: str = "masked_lm", **extra) -> transformers.DebertaConfig:
    # 3 classes; QA's head has num_labels outputs, which must be 2
    return transformers.DebertaConfig(**{**BASE, **CASES[case], **extra},
                                      num_labels=2 if head == "span_extraction" else 3)


def _model(case: str, head: str, seed: int = 0, **extra):
    return perturbed(getattr(transformers, HEADS[head])(_config(case, head, **extra)), seed)


def _pairs():
    """Every head under the base-like switches, each other relative case under two heads (each head twice in all),
    and relative attention off (in_proj without position projections) once."""
    others = [h for h in HEADS if h != "masked_lm"]
    pairs = [("base_like", h) for h in HEADS]
    for i, case in enumerate(c for c in CASES if c not in ("base_like", "relative_off")):
        pairs += [(case, "masked_lm"), (case, others[i % len(others)])]
    return pairs + [("relative_off", "token_classification")]


@pytest.mark.parametrize("case,head", _pairs())
def test_head_parity_and_round_trip(case, head):
    model = _model(case, head, seed=len(head))
    cfg = hf.config_from_hf(model.config)
    assert cfg.attention_kind == ("softmax" if case == "relative_off" else "disentangled")
    assert not cfg.share_position_keys and cfg.position_buckets == 0
    assert hf.head_from_hf(model) == head and hf.model_type_for(cfg) == "deberta-v2"  # plmjax-made: v2
    original = state_dict(model)
    params = hf.params_from_hf("deberta", original, cfg, head)
    attention = params["encoder"]["stack"]["layers_0"]["self_attention"]
    assert not np.any(attention["key"]["bias"])
    if "c2p" in cfg.relative_terms:
        assert not np.any(attention["kernel"]["position_key"]["bias"])
    assert_parity(cfg, head, params, model, *inputs(), label=case)

    back = hf.params_to_hf("deberta", params, cfg, head)
    assert sorted(back) == sorted(original)
    for k in back:
        np.testing.assert_array_equal(back[k], original[k], err_msg=k)
    d = hf.config_to_hf("deberta", cfg, head)
    assert d["model_type"] == "deberta" and d["architectures"] == [HEADS[head]]
    assert hf.config_from_hf(d) == cfg and hf.config_from_hf(transformers.DebertaConfig(**d)) == cfg


def test_in_proj_is_split_per_head_as_hf_chunks_it():
    """HF's own recipe for the fused weight (DisentangledSelfAttention with query_states): chunk it into heads * 3
    pieces and take every third (q, k, v) per head; plmjax's kernels are those, transposed."""
    model = _model("base_like", "encoder")
    cfg = hf.config_from_hf(model.config)
    params = hf.params_from_hf("deberta", state_dict(model), cfg, "encoder")
    attention = model.encoder.layer[1].attention.self
    ws = attention.in_proj.weight.detach().chunk(cfg.num_heads * 3, dim=0)
    ours = params["encoder"]["stack"]["layers_1"]["self_attention"]
    for k, name in enumerate(("query", "key", "value")):
        theirs = torch.cat([ws[i * 3 + k] for i in range(cfg.num_heads)], dim=0).numpy()  # [heads * d, H]
        np.testing.assert_array_equal(ours[name]["kernel"].reshape(32, -1).T, theirs, err_msg=name)
    np.testing.assert_array_equal(ours["query"]["bias"].reshape(-1), attention.q_bias.detach().numpy())
    np.testing.assert_array_equal(ours["value"]["bias"].reshape(-1), attention.v_bias.detach().numpy())
    np.testing.assert_array_equal(ours["kernel"]["position_key"]["kernel"].reshape(32, -1).T,
                                  attention.pos_proj.weight.detach().numpy())


def test_legacy_false_head_and_scanned_layers():
    """legacy=False names the MLM head lm_predictions.lm_head.* (as DeBERTa's own checkpoints do); it reads the
    same, and is written back in HF's default (legacy) naming. A scanned layout round-trips too."""
    model = _model("base_like", "masked_lm", seed=5, legacy=False)
    original = state_dict(model)
    assert "lm_predictions.lm_head.bias" in original
    cfg = hf.config_from_hf(model.config)
    params = hf.params_from_hf("deberta", original, cfg, "masked_lm")
    assert_parity(cfg, "masked_lm", params, model, *inputs(), label="legacy=False")

    plain = state_dict(_model("both_positions_in_input", "sequence_classification", seed=6))
    scanned = dataclasses.replace(hf.config_from_hf(_config("both_positions_in_input", "sequence_classification")),
                                  scan_layers=True)
    params = hf.params_from_hf("deberta", plain, scanned, "sequence_classification")
    assert params["encoder"]["stack"]["layers"]["self_attention"]["key"]["bias"].shape == (2, 4, 8)
    back = hf.params_to_hf("deberta", params, scanned, "sequence_classification")
    assert sorted(back) == sorted(plain)
    for k in back:
        np.testing.assert_array_equal(back[k], plain[k], err_msg=k)


def test_config_defaults():
    """DebertaConfig's defaults: relative_attention off, positions in the input, LayerNorm eps 1e-7, GELU pooler;
    max_relative_positions -1 is the position table's length; pos_att_type as a string or a list."""
    plain = hf.config_from_hf({"model_type": "deberta", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "intermediate_size": 40, "max_position_embeddings": 64})
    assert (plain.attention_kind, plain.position_kind, plain.norm_eps, plain.type_vocab_size) == (
        "softmax", "learned", 1e-7, 0)
    assert plain.pooler_activation == "gelu" and hf.config_from_hf(transformers.DebertaConfig(**BASE | {
        "relative_attention": False})) == plain
    base = hf.config_from_hf(_config("base_like"))
    assert (base.relative_terms, base.position_kind, base.max_relative_positions) == (("c2p", "p2c"), "none", 0)
    assert hf.config_from_hf({**_config("base_like").to_dict(), "pos_att_type": "C2P | P2C"}) == base
    # v2's keys, which HF v1 never reads, are ignored as HF ignores them
    v2_keys = dict(share_att_key=True, position_buckets=8, norm_rel_ebd="layer_norm", attention_head_size=4,
                   conv_kernel_size=3)
    assert hf.config_from_hf({**_config("base_like").to_dict(), **v2_keys}) == base


def test_what_v1_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="talking_head=true is not supported"):
        hf.config_from_hf(_config("base_like", talking_head=True))
    with pytest.raises(ValueError, match="pos_att_type=.* without relative_attention"):
        hf.config_from_hf(_config("base_like", relative_attention=False))
    cfg = hf.config_from_hf(_config("base_like"))
    for field, value in (("share_position_keys", True), ("position_buckets", 8), ("norm_relative_embeddings", True),
                         ("head_dim", 4)):
        with pytest.raises(ValueError, match=f"HF deberta cannot express model.{field}={value}"):
            hf.config_to_hf("deberta", dataclasses.replace(cfg, **{field: value}))
    hf.config_to_hf("deberta-v2", dataclasses.replace(cfg, share_position_keys=True))  # v2 can

    params = hf.params_from_hf("deberta", state_dict(_model("base_like", "masked_lm")), cfg, "masked_lm")
    hf.params_to_hf("deberta", params, cfg, "masked_lm")  # zero biases: fine
    attention = params["encoder"]["stack"]["layers_1"]["self_attention"]
    ids = torch.tensor(inputs()[0])
    for bias in (attention["key"], attention["kernel"]["position_key"]):
        bias["bias"] = bias["bias"].copy()
        bias["bias"][2, 5] = -0.0625
    # The position-key bias only shifts each query's c2p scores by a constant: written back without it, HF computes
    # what plmjax does with it. The key bias also moves p2c's scores: refused.
    with pytest.raises(ValueError, match="layers_1/self_attention/key/bias to HF DeBERTa v1 .*: in_proj's key has no "
                                         r"bias, but this one is nonzero \(max \|bias\| = 0.0625 at \[2, 5\], 1 "
                                         r"of 32 nonzero\) and changes the p2c scores"):
        hf.params_to_hf("deberta", params, cfg, "masked_lm")
    attention["key"]["bias"][2, 5] = 0.0
    exported = transformers.DebertaForMaskedLM(_config("base_like")).eval()
    back = hf.params_to_hf("deberta", params, cfg, "masked_lm")
    exported.load_state_dict({k: torch.tensor(v) for k, v in back.items()}, strict=False)
    mask = ids != 0
    ours = encoder.EncoderForMaskedLM(cfg).apply({"params": params}, jnp.asarray(ids))["mlm_logits"]
    with torch.no_grad():
        assert maxdiff(np.asarray(ours)[mask.numpy()], exported(ids, attention_mask=mask.long()).logits[mask]) <= TOL


def test_convert_cli_from_hf_and_back(tmp_path):
    written = assert_converts_both_ways(tmp_path, transformers.DebertaForMaskedLM, lambda vocab: (
        transformers.DebertaConfig(**{**BASE, **CASES["base_like"], "vocab_size": vocab})))
    assert written["model_type"] == "deberta"
    assert not {"share_att_key", "position_buckets", "norm_rel_ebd"} & set(written)
