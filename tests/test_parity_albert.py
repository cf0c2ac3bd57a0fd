"""ALBERT against transformers: every head (tiny random models, float32, CPU), the round trip back to HF
tensors, `plmjax convert` on a saved AlbertForPreTraining with a SentencePiece tokenizer, and the inputs
that must be refused.

Shapes differ from every preset (vocab 99, embedding 16, hidden 32, 3 layers, 4 heads, FFN 48, 40
positions), and every HF parameter is perturbed away from its init so a swapped or transposed mapping
cannot pass. plmjax's ALBERT is its BERT-style encoder with model.embedding_size < hidden_size and
model.shared_layer_groups=1, which the scanned layout cannot hold: only the unscanned one is compared.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

import torch
from finetuning import fine_tune_glue_rte
from hf_reference import maxdiff, perturbed, shapes, state_dict
import transformers

from pydoc_data.topics import topics  # noqa: E402

from plmjax.cli import main  # noqa: E402
from plmjax.config import ConfigError  # noqa: E402
from plmjax.convert import albert, directory, hf  # noqa: E402
from plmjax.data import pipeline  # noqa: E402
from plmjax.data.tokenizer import Tokenizer  # noqa: E402
from plmjax.models import encoder  # noqa: E402

TOL = 1e-4
VOCAB = 99
TINY = dict(embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=40, hidden_act="gelu_new")

# head -> (HF class, num_labels, plmjax module)
CASES = {
    "pretraining": ("AlbertForPreTraining", 2, encoder.EncoderForPretraining),
    "masked_lm": ("AlbertForMaskedLM", 2, encoder.EncoderForMaskedLM),
    "none": ("AlbertModel", 2, encoder.EncoderModel),
    "sequence_classification": ("AlbertForSequenceClassification", 3, encoder.EncoderForSequenceClassification),
    "token_classification": ("AlbertForTokenClassification", 5, encoder.EncoderForTokenClassification),
    "span_extraction": ("AlbertForQuestionAnswering", 2, encoder.EncoderForSpanExtraction),
}


def _config(**kw) -> transformers.AlbertConfig:
    return transformers.AlbertConfig(**{"vocab_size": VOCAB, **TINY, **kw})


@pytest.fixture(scope="module")
def models():
    built = {}
    for seed, (head, (cls_name, num_labels, _)) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        built[head] = perturbed(getattr(transformers, cls_name)(_config(num_labels=num_labels)), seed + 10)
    return built


def _inputs():
    torch.manual_seed(7)
    ids = torch.randint(5, VOCAB, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids * mask  # pad id 0
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    return ids, segments * mask, mask


# ---------------------------------------------------------------- config


def test_config_maps_both_ways(models):
    d = models["pretraining"].config.to_dict()
    cfg = hf.config_from_hf(d)
    assert (cfg.vocab_size, cfg.embedding_size, cfg.emb_dim, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
            cfg.mlp_dim, cfg.max_length, cfg.type_vocab_size) == (VOCAB, 16, 16, 32, 3, 4, 48, 40, 2)
    assert cfg.shared_layer_groups == 1 and cfg.activation == "gelu_tanh" and cfg.norm_eps == 1e-12
    assert (cfg.pad_token_id, cfg.num_labels, cfg.dropout_rate, cfg.attention_dropout_rate) == (0, 2, 0.0, 0.0)
    assert hf.config_from_hf(models["sequence_classification"].config).num_labels == 3
    assert hf.model_type_for(cfg) == "albert"  # a plmjax-trained ALBERT exports as ALBERT
    assert hf.model_type_for(dataclasses.replace(cfg, shared_layer_groups=0, embedding_size=0)) == "bert"

    back = hf.config_to_hf("albert", cfg, "masked_lm")  # passes the round-trip check
    assert back["architectures"] == ["AlbertForMaskedLM"]
    assert (back["num_hidden_groups"], back["inner_group_num"], back["hidden_act"]) == (1, 1, "gelu_new")
    assert {k: back[k] for k in set(back) - {"architectures", "model_type", "num_labels"}} == \
        {k: d[k] for k in set(back) - {"architectures", "model_type", "num_labels"}}
    assert hf.config_from_hf(back) == cfg
    assert hf.default_head("albert") == "pretraining" and hf.module_for(cfg) is encoder.EncoderForPretraining


def test_what_albert_cannot_hold_is_refused():
    for key in ("num_hidden_groups", "inner_group_num"):
        with pytest.raises(ValueError, match=f"ALBERT {key}=2 is not supported"):
            hf.config_from_hf(_config(**{key: 2}))
    with pytest.raises(ValueError, match="embedding_size=32 equal to hidden_size"):
        hf.config_from_hf(_config(embedding_size=32))
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        hf.config_from_hf(_config(tie_word_embeddings=False))
    cfg = hf.config_from_hf(_config())
    with pytest.raises(ValueError, match="HF albert cannot express model.shared_layer_groups=3"):
        hf.config_to_hf("albert", dataclasses.replace(cfg, shared_layer_groups=3))
    with pytest.raises(ValueError, match="HF albert cannot express model.embedding_size=32"):
        hf.config_to_hf("albert", dataclasses.replace(cfg, embedding_size=32))
    with pytest.raises(ValueError, match="HF albert cannot express model.norm_position='pre'"):
        hf.config_to_hf("albert", dataclasses.replace(cfg, norm_position="pre"))


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("head", list(CASES))
def test_head_parity(models, head):
    model = models[head]
    _, num_labels, module_cls = CASES[head]
    assert hf.head_from_hf(model) == head
    cfg, params = hf.from_torch_model(model)  # head inferred from the HF class
    assert cfg.num_labels == num_labels and hf.module_for(cfg, head) is module_cls
    ids, segments, mask = _inputs()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True)
    args = [jnp.asarray(x.numpy()) for x in (ids, segments, mask)]
    module = module_cls(cfg)
    expected = flax.core.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args))["params"]
    assert shapes(params) == shapes(expected)
    assert "layers_1" not in params["encoder"]["stack"]  # one layer, run at every depth
    out = module.apply({"params": params}, *args)
    if head == "pretraining":
        diffs = {"mlm": maxdiff(out["mlm_logits"], ref.prediction_logits),
                 "sop": maxdiff(out["nsp_logits"], ref.sop_logits),
                 "hidden": maxdiff(out["hidden"], ref.hidden_states[-1])}
        positions = [[1, 3], [0, 6], [2, 2]]  # and the MLM logits of chosen positions alone
        picked = module.apply({"params": params}, *args, masked_positions=jnp.asarray(positions))["mlm_logits"]
        diffs["picked"] = maxdiff(picked, ref.prediction_logits[torch.arange(3)[:, None], torch.tensor(positions)])
    elif head == "masked_lm":
        diffs = {"mlm": maxdiff(out["mlm_logits"], ref.logits), "hidden": maxdiff(out["hidden"],
                                                                                    ref.hidden_states[-1])}
    elif head == "none":
        diffs = {"hidden": maxdiff(out["hidden"], ref.last_hidden_state),
                 "pooled": maxdiff(out["pooled"], ref.pooler_output)}
    elif head == "span_extraction":
        diffs = {k: maxdiff(out[k], getattr(ref, k)) for k in ("start_logits", "end_logits")}
    else:
        diffs = {"logits": maxdiff(out, ref.logits)}
    print(head, diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_scanned_layout_is_refused(models):
    model = models["pretraining"]
    cfg = hf.config_from_hf(model.config, scan_layers=True)
    with pytest.raises(ValueError, match=r"model.scan_layers cannot hold ALBERT's shared layer"):
        hf.params_from_hf("albert", state_dict(model), cfg)
    with pytest.raises(ValueError, match=r"model.scan_layers cannot hold ALBERT's shared layer"):
        hf.params_to_hf("albert", {}, cfg)
    with pytest.raises(ConfigError, match="scan_layers cannot be combined with shared_layer_groups"):
        encoder.EncoderForPretraining(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))


@pytest.mark.parametrize("head", list(CASES))
def test_round_trip_is_bit_identical(models, head):
    model = models[head]
    cfg = hf.config_from_hf(model.config)
    sd = state_dict(model)
    assert ("predictions.decoder.weight" in sd) == (head in ("pretraining", "masked_lm"))  # tied aliases too
    back = hf.params_to_hf("albert", hf.params_from_hf("albert", sd, cfg, head=head), cfg, head=head)
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # boxed params straight from init convert too: the module's tree is exactly the head's rules
    boxed = hf.module_for(cfg, head)(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))
    assert set(hf.params_to_hf("albert", boxed, cfg, head=head)) == set(sd)


def test_masked_lm_drops_a_pooler_it_does_not_use(models):
    """transformers 5's AlbertForMaskedLM has no pooler; a checkpoint that carries one (an old AlbertForMaskedLM)
    converts to the same parameters, and the export leaves it out again."""
    model = models["masked_lm"]
    cfg = hf.config_from_hf(model.config)
    sd = state_dict(model)
    assert not any(k.startswith("albert.pooler") for k in sd)
    pooler = {k: v for k, v in state_dict(models["pretraining"]).items() if k.startswith("albert.pooler.")}
    assert sorted(pooler) == ["albert.pooler.bias", "albert.pooler.weight"]
    with_pooler = {**sd, **pooler}
    assert albert.guess_head(with_pooler) == "masked_lm"
    jax.tree.map(np.testing.assert_array_equal, hf.params_from_hf("albert", with_pooler, cfg, head="masked_lm"),
                 hf.params_from_hf("albert", sd, cfg, head="masked_lm"))
    assert set(hf.params_to_hf("albert", hf.params_from_hf("albert", with_pooler, cfg, head="masked_lm"), cfg,
                               head="masked_lm")) == set(sd)
    # a head whose HF class has a pooler still needs it, and an ALBERT model's keys need no 'albert.' prefix
    with pytest.raises(ValueError, match=r"missing keys:\n  albert\.pooler\.weight"):
        hf.params_from_hf("albert", sd, cfg, head="sequence_classification")
    base = state_dict(models["none"])
    jax.tree.map(np.testing.assert_array_equal,
                 hf.params_from_hf("albert", {f"albert.{k}": v for k, v in base.items()}, cfg, head="none"),
                 hf.params_from_hf("albert", base, cfg, head="none"))


def test_head_from_keys_and_architectures(models):
    for head, model in models.items():
        assert albert.guess_head(state_dict(model)) == head
        config = {**model.config.to_dict(), "architectures": [CASES[head][0]]}  # as save_pretrained writes it
        assert hf.head_from_hf(config) == head
    # hub albert-base-v2 names AlbertForMaskedLM yet holds the pretraining weights: the keys win
    hint = {"model_type": "albert", "architectures": ["AlbertForMaskedLM"]}
    assert hf.release_head(hint, state_dict(models["pretraining"])) == "pretraining"
    assert hf.architecture("albert", "span_extraction") == "AlbertForQuestionAnswering"


def test_misfits_name_the_offending_parameters(models):
    sd = state_dict(models["pretraining"])
    bert_cfg = hf.config_from_hf(transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3,
                                                         num_attention_heads=4, intermediate_size=48,
                                                         max_position_embeddings=40))
    with pytest.raises(ValueError) as caught:
        hf.params_from_hf("bert", sd, bert_cfg)
    error = str(caught.value)
    assert "missing keys:\n  bert.embeddings.word_embeddings.weight (expected shape (99, 32))" in error
    assert "  bert.encoder.layer.2.attention.self.query.weight" in error
    assert "unexpected keys:\n  albert.embeddings." in error
    assert "  albert.encoder.embedding_hidden_mapping_in.weight (32, 16)" in error
    assert "  albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight (48, 32)" in error
    assert "  sop_classifier.classifier.weight (2, 32)" in error
    assert "the keys look like" not in error  # BERT's key-based head hint does not misread ALBERT's keys

    cfg = hf.config_from_hf(models["pretraining"].config)
    with pytest.raises(ValueError) as caught:
        hf.params_from_hf("albert", sd, dataclasses.replace(cfg, embedding_size=24, mlp_dim=40))
    error = str(caught.value)
    assert "albert.embeddings.word_embeddings.weight: got (99, 16), expected (99, 24)" in error
    assert "albert.encoder.embedding_hidden_mapping_in.weight: got (32, 16), expected (32, 24)" in error
    assert "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight: got (48, 32), expected (40, 32)" in error
    with pytest.raises(ValueError, match=r"unexpected keys:\n  classifier\.weight(.|\n)*"
                                         r"the keys look like head='sequence_classification'"):
        hf.params_from_hf("albert", state_dict(models["sequence_classification"]), cfg)
    with pytest.raises(ValueError, match="unknown ALBERT head 'ner'"):
        hf.params_from_hf("albert", sd, cfg, head="ner")
    untied = {**sd, "predictions.decoder.bias": sd["predictions.bias"] + 1}
    with pytest.raises(ValueError, match="predictions.decoder.bias differs from predictions.bias"):
        hf.params_from_hf("albert", untied, cfg)


# ---------------------------------------------------------------- `plmjax convert`

DOCS = list(topics.values())[:20]
TEXT = "The FOR statement is used to iterate over the elements of a sequence: ``like this''."
SPM_VOCAB = 200


def _sentencepiece(path) -> None:
    """A unigram SentencePiece model in ALBERT's layout: <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4."""
    import sentencepiece

    lines = [line for doc in DOCS for line in doc.splitlines() if line.strip()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=SPM_VOCAB, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
        control_symbols=["[CLS]", "[SEP]"], user_defined_symbols=["[MASK]"], minloglevel=2, num_threads=1)
    path.write_bytes(model.getvalue())


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(HF directory as a release ships it: config, weights, spiece.model, tokenizer.json; its converted directory)."""
    hf_dir = tmp_path_factory.mktemp("albert_release")
    _sentencepiece(hf_dir / "spiece.model")
    transformers.AlbertTokenizer.from_pretrained(hf_dir).save_pretrained(hf_dir)
    torch.manual_seed(0)
    model = perturbed(transformers.AlbertForPreTraining(transformers.AlbertConfig(vocab_size=SPM_VOCAB, **TINY)), 5)
    model.save_pretrained(hf_dir)
    out = str(tmp_path_factory.mktemp("albert_converted") / "ckpt")
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0
    return hf_dir, out


def test_a_converted_albert_fine_tunes_glue_rte(released, tmp_path):
    config = fine_tune_glue_rte(released[1], str(tmp_path / "rte"))
    assert (config["model"]["shared_layer_groups"], config["model"]["embedding_size"]) == (1, TINY["embedding_size"])
    assert config["data"]["mixture"] == "glue_rte_features"


def test_convert_run_and_export_back(released, tmp_path):
    hf_dir, out = released
    loaded = directory.load(out)
    assert loaded.head == "pretraining" and isinstance(loaded.tokenizer, Tokenizer)
    model = transformers.AlbertForPreTraining.from_pretrained(hf_dir).eval()
    ids, segments, mask = _inputs()
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    out_ = loaded.module().apply({"params": loaded.params}, *[x.numpy() for x in (ids, segments, mask)])
    assert maxdiff(out_["mlm_logits"], theirs.prediction_logits) <= TOL
    assert maxdiff(out_["nsp_logits"], theirs.sop_logits) <= TOL

    back = tmp_path / "back"
    assert main(["convert", "--to", "hf", out, "--out", str(back)]) == 0
    original, exported = hf.read_state_dict(hf_dir), hf.read_state_dict(back)
    assert sorted(exported) == sorted(original) and "predictions.dense.weight" in original
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key], err_msg=key)
    again, info = transformers.AlbertForPreTraining.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert json.loads((back / "config.json").read_text())["architectures"] == ["AlbertForPreTraining"]
    with torch.no_grad():
        theirs_again = again.eval()(input_ids=ids, attention_mask=mask, token_type_ids=segments)
    np.testing.assert_array_equal(theirs_again.prediction_logits.numpy(), theirs.prediction_logits.numpy())
    np.testing.assert_array_equal(theirs_again.sop_logits.numpy(), theirs.sop_logits.numpy())
    assert (back / "tokenizer.json").read_text() == (pathlib.Path(out) / "tokenizer.json").read_text()


def test_the_converted_tokenizer_is_albert_s(released, capsys):
    hf_dir, out = released
    config = directory.read_config(out)
    assert (pathlib.Path(out) / "spiece.model").is_file()  # copied as it is, yet not what the model reads:
    assert pipeline.vocabulary_path(config, out).endswith("tokenizer.json")
    tokenizer = directory.load_tokenizer(out, config)
    assert isinstance(tokenizer, Tokenizer) and tokenizer.kind == "unigram" and tokenizer.num_sentinels == 0
    ids = {k: getattr(tokenizer, k) for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id", "eos_id")}
    assert ids == {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4, "eos_id": 3}
    assert {0, 1, 2, 3, 4} <= tokenizer.special_ids and tokenizer.vocab_size == SPM_VOCAB
    reference = transformers.AlbertTokenizer.from_pretrained(hf_dir)
    assert tokenizer.encode(TEXT) == _ids(reference, TEXT) and tokenizer.unk_id not in tokenizer.encode(TEXT)
    assert config.objective.kind == "sop" and config.objective.sop.ngram == 3  # ALBERT's own objective
    # n-gram-masked, sentence-order batches framed and masked with those ids run through the converted model
    quick = ["--set", "data.seq_length=32", "--set", "data.batch_size=8", "--set", "train.eval_steps=1"]
    assert main(["eval", "--checkpoint", out] + quick) == 0
    report = capsys.readouterr().out
    assert f"eval of {out} at step 0" in report and "mlm_loss" in report and "sop_loss" in report


def test_a_release_with_only_spiece_model_gets_a_tokenizer_json(released, tmp_path):
    hf_dir, _ = released
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "spiece.model"):
        shutil.copyfile(hf_dir / name, bare / name)
    out = tmp_path / "out"
    assert main(["convert", "--from", "hf", str(bare), "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()
    tokenizer = directory.load_tokenizer(str(out), directory.read_config(str(out)))
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == \
        (0, 1, 2, 3, 4)
    reference = transformers.AlbertTokenizer.from_pretrained(bare)  # transformers' own reading of spiece.model
    # accents, full-width forms, spacing and [MASK] in the text; a zero-width space and a bell only the
    # model's own (precompiled) normalization removes
    for text in (TEXT, "Café naïve  ＡＢ [MASK] x", "zero\u200bwidth\x07bell", DOCS[3][:300]):
        assert tokenizer.encode(text) == _ids(reference, text), text
        assert tokenizer.hf.encode(text, "and a pair").ids == reference(text, "and a pair").input_ids, text
    # a T5-style release's spiece.model is still left for plmjax.data.vocabularies (no tokenizer.json built)
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    shutil.copyfile(hf_dir / "spiece.model", t5 / "spiece.model")
    from plmjax.convert import vocab

    assert vocab.release_tokenizer(t5) is None
    # an ALBERT vocabulary without ALBERT's [CLS] [SEP] [MASK] cannot frame or mask sequences: refused up front
    plain = tokenizers.Tokenizer(tokenizers.models.Unigram([("<pad>", 0.0), ("<unk>", 0.0), ("▁a", -1.0)], unk_id=1))
    plain.save(str(t5 / "tokenizer.json"))
    (t5 / "config.json").write_text(json.dumps({"model_type": "albert"}))
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        vocab.release_tokenizer(t5)


def test_a_plmjax_albert_exports_as_albert(released, tmp_path):
    """With no HF config to start from (a plmjax-trained ALBERT), the export is ALBERT's by model_type_for."""
    _, out = released
    loaded = directory.load(out)
    bare = tmp_path / "trained"
    directory.save(str(bare), loaded.config, loaded.params, loaded.tokenizer)  # no hf_config.json
    back = tmp_path / "back"
    assert main(["convert", "--to", "hf", str(bare), "--out", str(back)]) == 0
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == "albert" and config["architectures"] == ["AlbertForPreTraining"]
    model, info = transformers.AlbertForPreTraining.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, segments, mask = _inputs()
    with torch.no_grad():
        theirs = model.eval()(input_ids=ids, attention_mask=mask, token_type_ids=segments).prediction_logits
    ours = loaded.module().apply({"params": loaded.params}, *[x.numpy() for x in (ids, segments, mask)])
    assert maxdiff(ours["mlm_logits"], theirs) <= TOL


def test_cli_misfits_are_one_clear_error(released, tmp_path, capsys):
    hf_dir, _ = released
    args = ["convert", "--from", "hf", str(hf_dir), "--out", str(tmp_path / "a")]
    assert main(args + ["--set", "model.embedding_size=24"]) == 2
    error = capsys.readouterr().err
    assert "albert.embeddings.word_embeddings.weight: got (200, 16), expected (200, 24)" in error
    assert main(args + ["--set", "model.scan_layers=true"]) == 2
    assert "model.scan_layers cannot hold ALBERT's shared layer" in capsys.readouterr().err
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    shutil.copyfile(hf_dir / "model.safetensors", grouped / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    (grouped / "config.json").write_text(json.dumps({**config, "num_hidden_groups": 3}))
    assert main(["convert", "--from", "hf", str(grouped), "--out", str(tmp_path / "b")]) == 2
    assert "ALBERT num_hidden_groups=3 is not supported" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
