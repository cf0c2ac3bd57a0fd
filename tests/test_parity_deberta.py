"""DeBERTa v2/v3 against transformers: disentangled attention under each switch HF's DebertaV2Config has (c2p,
p2c or both; shared or own position projections; exact or log-bucketed relative positions; v2's convolution;
absolute positions in the input or not; relative attention off), every head, the bucketing function, the round
trip back to HF tensors, `plmjax convert` both ways, and what must be refused.

Shapes differ from every preset (vocab 99, 32 wide, 4 heads, 2 layers, FFN 40, 64 positions) and every HF
parameter is perturbed away from its init, so a swapped or transposed mapping cannot pass. Hidden states are
compared on real tokens: HF zeroes padded positions' attention, which only those positions see.
"""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from deberta_reference import TOL, assert_converts_both_ways, assert_parity, hf_outputs, inputs, plmjax_outputs
from hf_reference import maxdiff, perturbed, state_dict
from transformers.models.deberta_v2 import modeling_deberta_v2

from plmjax.convert import deberta, hf
from plmjax.layers.disentangled import log_bucket_position

BASE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=64, relative_attention=True, type_vocab_size=0, position_biased_input=False)
CASES = {
    "v3": dict(pos_att_type="p2c|c2p", share_att_key=True, position_buckets=8, norm_rel_ebd="layer_norm"),
    "c2p_own_keys": dict(pos_att_type="c2p", share_att_key=False, max_relative_positions=6),
    "p2c_own_keys_buckets": dict(pos_att_type="p2c", share_att_key=False, position_buckets=12,
                                 max_relative_positions=20),
    "both_own_keys_conv": dict(pos_att_type="p2c|c2p", share_att_key=False, conv_kernel_size=3, conv_act="gelu",
                               position_buckets=8, type_vocab_size=2, position_biased_input=True),
    "shared_exact": dict(pos_att_type="c2p|p2c", share_att_key=True, attention_head_size=8, max_relative_positions=10),
    "relative_off": dict(relative_attention=False, position_biased_input=True),
}
HEADS = {"masked_lm": "DebertaV2ForMaskedLM", "sequence_classification": "DebertaV2ForSequenceClassification",
         "token_classification": "DebertaV2ForTokenClassification",
         "span_extraction": "DebertaV2ForQuestionAnswering", "encoder": "DebertaV2Model"}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    def config(head):  # 3 classes; QA's head has num_labels outputs, which must be 2
        return transformers.DebertaV2Config(**{**BASE, **CASES[request.param]},
                                            num_labels=2 if head == "span_extraction" else 3)

    models = {head: perturbed(getattr(transformers, cls)(config(head)), seed)
              for seed, (head, cls) in enumerate(HEADS.items())}
    return request.param, models


@pytest.mark.parametrize("head", list(HEADS))
def test_head_parity_and_round_trip(case, head):
    name, models = case
    model = models[head]
    cfg = hf.config_from_hf(model.config)
    assert hf.head_from_hf(model) == head and hf.model_type_for(cfg) == "deberta-v2"
    original = state_dict(model)
    params = hf.params_from_hf("deberta-v2", original, cfg, head)
    assert_parity(cfg, head, params, model, *inputs(), label=name)

    back = hf.params_to_hf("deberta-v2", params, cfg, head)
    assert sorted(back) == sorted(k for k in original if k != "deberta.embeddings.position_ids")
    for k in back:
        np.testing.assert_array_equal(back[k], original[k], err_msg=k)
    assert hf.config_from_hf(hf.config_to_hf("deberta-v2", cfg, head)) == cfg


def test_the_switches_reach_the_config():
    cfg = hf.config_from_hf(transformers.DebertaV2Config(**{**BASE, **CASES["both_own_keys_conv"]}))
    assert (cfg.attention_kind, cfg.relative_terms, cfg.share_position_keys, cfg.position_buckets) == (
        "disentangled", ("p2c", "c2p"), False, 8)
    assert (cfg.conv_kernel_size, cfg.conv_activation, cfg.position_kind, cfg.type_vocab_size) == (
        3, "gelu", "learned", 2)
    v3 = hf.config_from_hf(transformers.DebertaV2Config(**{**BASE, **CASES["v3"]}))
    assert (v3.position_kind, v3.norm_relative_embeddings, v3.pooler_activation, v3.norm_eps) == (
        "none", True, "gelu", 1e-7)
    off = hf.config_from_hf(transformers.DebertaV2Config(**{**BASE, **CASES["relative_off"]}))
    assert off.attention_kind == "softmax"


@pytest.mark.parametrize("bucket_size,max_position", [(8, 20), (12, 64), (256, 512)])
def test_bucketing_equals_hf(bucket_size, max_position):
    distances = np.arange(-3 * max_position, 3 * max_position + 1)
    theirs = modeling_deberta_v2.make_log_bucket_position(torch.tensor(distances), bucket_size, max_position)
    ours = np.asarray(log_bucket_position(jnp.asarray(distances), bucket_size, max_position))
    np.testing.assert_array_equal(ours, theirs.numpy().astype(np.int64))
    assert ours.max() > bucket_size // 2  # distances beyond the exact range are log-bucketed, not clamped away


def test_v3_checkpoint_naming_and_its_extra_keys():
    """DeBERTa v3's checkpoints name the MLM head lm_predictions.lm_head.* (legacy=False) and keep a position table
    and the replaced-token-detection head (mask_predictions.*) that HF ignores; plmjax reads them the same way."""
    config = transformers.DebertaV2Config(**{**BASE, **CASES["v3"], "legacy": False})
    model = perturbed(transformers.DebertaV2ForMaskedLM(config), 7)
    original = state_dict(model)
    assert "lm_predictions.lm_head.bias" in original and deberta.guess_head(original) == "masked_lm"
    extra = dict(original, **{"deberta.embeddings.position_embeddings.weight": np.zeros((64, 32), np.float32),
                              "mask_predictions.dense.weight": np.zeros((32, 32), np.float32)})
    cfg = hf.config_from_hf(config)
    params = hf.params_from_hf("deberta-v2", extra, cfg, "masked_lm")
    ids, segments, mask = inputs()
    ours, theirs = plmjax_outputs(cfg, "masked_lm", params, ids, segments, mask), hf_outputs(model, ids, segments, mask)
    assert maxdiff(np.asarray(ours["mlm_logits"])[mask.astype(bool)], theirs.logits.numpy()[mask.astype(bool)]) <= TOL


def test_what_plmjax_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="pos_att_type=.* without relative_attention"):  # HF scales by sqrt(3d)
        hf.config_from_hf(transformers.DebertaV2Config(**{**BASE, "relative_attention": False,
                                                          "pos_att_type": "p2c|c2p"}))
    with pytest.raises(ValueError, match="embedding_size=16 != hidden_size=32"):
        hf.config_from_hf(transformers.DebertaV2Config(**{**BASE, "embedding_size": 16}))
    config = transformers.DebertaV2Config(**{**BASE, **CASES["v3"]})
    cfg = hf.config_from_hf(config)
    classifier = state_dict(perturbed(transformers.DebertaV2ForSequenceClassification(config), 0))
    with pytest.raises(ValueError, match="look like head='sequence_classification'"):
        hf.params_from_hf("deberta-v2", classifier, cfg, "masked_lm")


def test_convert_cli_from_hf_and_back(tmp_path):
    written = assert_converts_both_ways(tmp_path, transformers.DebertaV2ForMaskedLM, lambda vocab: (
        transformers.DebertaV2Config(**{**BASE, **CASES["v3"], "vocab_size": vocab})))
    assert written["model_type"] == "deberta-v2"
