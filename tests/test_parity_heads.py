"""BERT task heads against transformers: BertForSequenceClassification (3 labels and 1 = regression),
BertForTokenClassification, BertForQuestionAnswering and BertModel (tiny random models, float32, CPU).

Every HF parameter is perturbed away from its init so a swapped or transposed mapping cannot hide
behind a trivial value (zero biases, unit norm scales).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
import transformers
from hf_reference import maxdiff, shapes, state_dict

from plmjax.convert import hf  # noqa: E402
from plmjax.models import encoder  # noqa: E402

TOL = 1e-4
VOCAB = 120

# name -> (HF class, num_labels, plmjax head, plmjax module)
CASES = {
    "seq_cls_3": ("BertForSequenceClassification", 3, "sequence_classification",
                  encoder.EncoderForSequenceClassification),
    "seq_regression": ("BertForSequenceClassification", 1, "sequence_classification",
                       encoder.EncoderForSequenceClassification),
    "token_cls": ("BertForTokenClassification", 5, "token_classification", encoder.EncoderForTokenClassification),
    "qa": ("BertForQuestionAnswering", 2, "span_extraction", encoder.EncoderForSpanExtraction),
    "bert_model": ("BertModel", 2, "none", encoder.EncoderModel),
    "pretraining": ("BertForPreTraining", 2, "pretraining", encoder.EncoderForPretraining),
}


def _build(name, seed=0):
    cls_name, num_labels, _, _ = CASES[name]
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
        num_labels=num_labels,
    )
    model = getattr(transformers, cls_name)(config)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def models():
    return {name: _build(name, seed=i) for i, name in enumerate(CASES)}


def _inputs():
    torch.manual_seed(7)
    ids = torch.randint(1, VOCAB, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids * mask  # pad id 0
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    segments = segments * mask
    return ids, segments, mask


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", [n for n in CASES if n != "pretraining"])
def test_head_parity(models, name, scan):
    model = models[name]
    _, num_labels, head, module_cls = CASES[name]
    assert hf.head_from_hf(model) == head
    cfg, params = hf.from_torch_model(model, scan_layers=scan)  # head inferred from the HF class
    assert cfg.num_labels == num_labels and cfg.scan_layers is scan
    assert hf.module_for(cfg, head) is module_cls
    ids, segments, mask = _inputs()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    args = [jnp.asarray(x.numpy()) for x in (ids, segments, mask)]
    module = module_cls(cfg)
    expected = flax.core.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args))["params"]
    assert shapes(params) == shapes(expected)
    out = module.apply({"params": params}, *args)
    if head in ("sequence_classification", "token_classification"):
        diffs = {"logits": maxdiff(out, ref.logits)}
    elif head == "span_extraction":
        diffs = {k: maxdiff(out[k], getattr(ref, k)) for k in ("start_logits", "end_logits")}
    else:
        diffs = {"last_hidden": maxdiff(out["hidden"], ref.last_hidden_state),
                 "pooled": maxdiff(out["pooled"], ref.pooler_output)}
    print(name, "scan" if scan else "", diffs)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_head_round_trip(models, name, scan):
    model = models[name]
    head = CASES[name][2]
    cfg = hf.config_from_hf(model.config, scan_layers=scan)
    sd = state_dict(model)
    params = hf.params_from_hf("bert", sd, cfg, head=head)
    if scan:
        assert any("/layers/" in p for p in hf.flatten(params))
    back = hf.params_to_hf("bert", params, cfg, head=head)
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # boxed params straight from init convert too: the module's tree is exactly the head's rules
    module = hf.module_for(cfg, head)(cfg)
    boxed = module.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))
    assert set(hf.params_to_hf("bert", boxed, cfg, head=head)) == set(sd)


def test_default_head_is_pretraining(models):
    model = models["pretraining"]
    cfg = hf.config_from_hf(model.config)
    sd = state_dict(model)
    jax.tree.map(np.testing.assert_array_equal, hf.params_from_hf("bert", sd, cfg),
                 hf.params_from_hf("bert", sd, cfg, head="pretraining"))
    assert hf.module_for(cfg) is encoder.EncoderForPretraining


def test_head_from_config_architectures(models, tmp_path):
    import json

    for name, (cls_name, _, head, _) in CASES.items():  # a checkpoint on disk converts with no head given
        path = tmp_path / name
        models[name].save_pretrained(path)  # config.json gets architectures=[cls_name]
        d = json.loads((path / "config.json").read_text())
        assert d["architectures"] == [cls_name]
        assert hf.head_from_hf(d) == head
        cfg = hf.config_from_hf(d)
        params = hf.params_from_hf("bert", hf.read_state_dict(path), cfg, hf.head_from_hf(d))
        jax.tree.map(np.testing.assert_array_equal, params, hf.from_torch_model(models[name])[1])
    assert hf.head_from_hf(transformers.BertConfig()) is None  # no architectures: the family default
    # a config's architectures is a hint only (an unknown one is the default); a live model's class is
    # authoritative (hub bert-base-uncased's BertForMaskedLM hint: tests/test_masked_lm.py)
    assert hf.head_from_hf({"model_type": "bert", "architectures": ["BertForMultipleChoice"]}) is None
    with pytest.raises(ValueError, match="HF BertForMultipleChoice has no plmjax counterpart"):
        hf.head_from_hf(transformers.BertForMultipleChoice(transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)))
    assert hf.head_from_hf({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}) is None


def test_wrong_head_is_named(models):
    sd = state_dict(models["seq_cls_3"])
    cfg = hf.config_from_hf(models["seq_cls_3"].config)
    with pytest.raises(ValueError, match=r"unexpected keys:\n  classifier\.weight(.|\n)*"
                                         r"the keys look like head='sequence_classification'"):
        hf.params_from_hf("bert", sd, cfg)
    with pytest.raises(ValueError, match="missing keys:\n  qa_outputs.weight"):
        hf.params_from_hf("bert", sd, cfg, head="span_extraction")
    with pytest.raises(ValueError, match=r"classifier\.weight: got \(3, 32\), expected \(4, 32\)"):
        hf.params_from_hf("bert", sd, hf.config_from_hf(models["seq_cls_3"].config, num_labels=4),
                          head="sequence_classification")
    with pytest.raises(ValueError, match="unknown BERT head 'ner'"):
        hf.params_from_hf("bert", sd, cfg, head="ner")
    with pytest.raises(ValueError, match="'gpt2' has no selectable heads"):
        hf.params_from_hf("gpt2", {}, cfg, head="none")
    with pytest.raises(ValueError, match="has no selectable heads"):
        hf.module_for(hf.config_from_hf(transformers.GPT2Config()), head="none")


def test_bert_model_keys_with_prefix(models):
    """A BertModel state dict saved under a 'bert.' prefix (as inside the task classes) converts too."""
    sd = state_dict(models["bert_model"])
    cfg = hf.config_from_hf(models["bert_model"].config)
    prefixed = {f"bert.{k}": v for k, v in sd.items()}
    jax.tree.map(np.testing.assert_array_equal, hf.params_from_hf("bert", prefixed, cfg, head="none"),
                 hf.params_from_hf("bert", sd, cfg, head="none"))


def test_module_for_other_arches():
    from plmjax.models.decoder import DecoderLM
    from plmjax.models.encoder_decoder import EncoderDecoder

    assert hf.module_for(hf.config_from_hf(transformers.GPT2Config())) is DecoderLM
    assert hf.module_for(hf.config_from_hf(transformers.T5Config())) is EncoderDecoder
