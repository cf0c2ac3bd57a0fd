"""ELECTRA against transformers: the discriminator (ElectraForPreTraining) and the generator
(ElectraForMaskedLM) as plmjax's EncoderForTokenDetection and EncoderForMaskedLM, the round trip back to
HF tensors, plmjax's joint ReplacedTokenDetection model built from an HF pair, `plmjax convert` both ways
on saved HF directories, the export of a plmjax ELECTRA training run as an HF discriminator + generator,
and the inputs that must be refused.

Shapes differ from every preset (vocab 99, embeddings 16, discriminator 32 wide with 4 heads, generator 24
wide with 2 heads, 3 layers, FFN 40, 40 positions), and every HF parameter is perturbed away from its init
so a swapped or transposed mapping cannot pass.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
from finetuning import fine_tune_glue_rte
from hf_reference import maxdiff, perturbed, shapes, state_dict
import transformers

from pydoc_data.topics import topics  # noqa: E402

from plmjax.cli import main  # noqa: E402
from plmjax.convert import directory, electra, hf  # noqa: E402
from plmjax.data.tokenizer import Tokenizer  # noqa: E402
from plmjax.models import encoder  # noqa: E402
from plmjax.models import electra as electra_model  # noqa: E402
from plmjax.objectives.replaced_token_detection import ReplacedTokenDetectionOptions  # noqa: E402

TOL = 1e-4
VOCAB = 99
COMMON = dict(vocab_size=VOCAB, num_hidden_layers=3, intermediate_size=40, max_position_embeddings=40)
DISCRIMINATOR = dict(COMMON, embedding_size=16, hidden_size=32, num_attention_heads=4)
GENERATOR = dict(COMMON, embedding_size=16, hidden_size=24, num_attention_heads=2)

# name -> (HF class, config, plmjax head, plmjax module); *_same: embedding_size == hidden_size (no embeddings_project)
CASES = {
    "discriminator": ("ElectraForPreTraining", DISCRIMINATOR, "replaced_token_detection",
                      encoder.EncoderForTokenDetection),
    "discriminator_same": ("ElectraForPreTraining", dict(DISCRIMINATOR, embedding_size=32),
                           "replaced_token_detection", encoder.EncoderForTokenDetection),
    "generator": ("ElectraForMaskedLM", GENERATOR, "masked_lm", encoder.EncoderForMaskedLM),
    "generator_same": ("ElectraForMaskedLM", dict(GENERATOR, embedding_size=24), "masked_lm",
                       encoder.EncoderForMaskedLM),
}
DISCRIMINATORS = [n for n in CASES if n.startswith("discriminator")]
GENERATORS = [n for n in CASES if n.startswith("generator")]
DOCS = list(topics.values())[:20]
TEXT = "The for statement is used to iterate over the elements of a sequence."


def _build(name: str, seed: int):
    cls_name, config, _, _ = CASES[name]
    torch.manual_seed(seed)
    return perturbed(getattr(transformers, cls_name)(transformers.ElectraConfig(**config)), seed + 100)


@pytest.fixture(scope="module")
def models():
    return {name: _build(name, i) for i, name in enumerate(CASES)}


def _inputs(vocab: int = VOCAB, seed: int = 7, batch: int = 3, length: int = 12):
    """Right-padded ids (pad 0), their mask and two segments."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, length))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    segments = np.zeros_like(ids)
    segments[:, 5:] = 1
    return ids * mask, segments * mask, mask


def _hf(model, ids, segments, mask):
    t = lambda x: torch.from_numpy(np.array(x)).long()  # noqa: E731
    with torch.no_grad():
        return model(input_ids=t(ids), token_type_ids=t(segments), attention_mask=t(mask))


def _ours(module, params, ids, segments, mask):
    return module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(segments), jnp.asarray(mask))


def _hidden(model, ids, segments, mask):
    t = lambda x: torch.from_numpy(np.array(x)).long()  # noqa: E731
    with torch.no_grad():
        return model.electra(input_ids=t(ids), token_type_ids=t(segments), attention_mask=t(mask)).last_hidden_state


def _module_shapes(module, *args) -> dict[str, tuple[int, ...]]:
    return shapes(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"])


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_parity(models, name, scan):
    model = models[name]
    _, config, head, module_cls = CASES[name]
    assert hf.head_from_hf(model) == head
    cfg, params = hf.from_torch_model(model, scan_layers=scan)  # head from the HF class
    assert (cfg.emb_dim, cfg.hidden_size, cfg.num_heads, cfg.scan_layers) == (
        config["embedding_size"], config["hidden_size"], config["num_attention_heads"], scan)
    assert hf.module_for(cfg, head) is module_cls is electra.module_for(head)
    ids, segments, mask = _inputs()
    module = module_cls(cfg)
    assert shapes(params) == _module_shapes(module, *map(jnp.asarray, (ids, segments, mask)))
    assert ("projection" in params["encoder"]["embedder"]) is (config["embedding_size"] != config["hidden_size"])
    out = _ours(module, params, ids, segments, mask)
    ref = _hf(model, ids, segments, mask)
    key = "detection_logits" if head == "replaced_token_detection" else "mlm_logits"
    diffs = {"logits": maxdiff(out[key], ref.logits),  # every position, padding too: the masks agree
             "hidden": maxdiff(out["hidden"], _hidden(model, ids, segments, mask))}
    print(name, "scan" if scan else "", diffs)
    assert max(diffs.values()) <= TOL, diffs
    assert float(np.abs(np.asarray(out[key])).max()) > 0.1  # not trivially near zero


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(models, name, scan):
    model = models[name]
    _, config, head, _ = CASES[name]
    cfg = hf.config_from_hf(model.config, scan_layers=scan)
    sd = state_dict(model)
    assert ("electra.embeddings_project.weight" in sd) is (config["embedding_size"] != config["hidden_size"])
    assert ("generator_lm_head.weight" in sd) is (head == "masked_lm")  # the tied alias, in the state dict
    params = hf.params_from_hf("electra", sd, cfg, head=head)
    if scan:
        assert any("/layers/" in p for p in hf.flatten(params))
    back = hf.params_to_hf("electra", params, cfg, head=head)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # save_pretrained's keys are the rules' (the tied copy left out)
    assert hf.rule_keys("electra", cfg, head) == set(sd) - set(electra.tied(head))
    # the exported config.json rebuilds the same HF architecture
    d = hf.config_to_hf("electra", cfg, head)
    assert d["architectures"] == [CASES[name][0]] and hf.head_from_hf(d) == head
    rebuilt = transformers.ElectraConfig(**{k: v for k, v in d.items() if k not in ("model_type", "architectures")})
    for key in config:
        assert getattr(rebuilt, key) == getattr(model.config, key), key


def test_default_head_and_release_head(models):
    sd = state_dict(models["discriminator"])
    cfg = hf.config_from_hf(models["discriminator"].config)
    jax.tree.map(np.testing.assert_array_equal, hf.params_from_hf("electra", sd, cfg),
                 hf.params_from_hf("electra", sd, cfg, head="replaced_token_detection"))
    assert hf.default_head("electra") == "replaced_token_detection"
    config = {"model_type": "electra", "architectures": ["ElectraForMaskedLM"]}  # the keys decide, as on the hub
    assert hf.release_head(config, sd) == "replaced_token_detection"
    assert hf.release_head({**config, "architectures": ["ElectraForPreTraining"]},
                           state_dict(models["generator"])) == "masked_lm"


# ---------------------------------------------------------------- the joint pretraining model


def test_joint_model_from_an_hf_pair(models):
    """plmjax's ReplacedTokenDetection params assembled from an HF discriminator and a generator sharing its
    embeddings: split back, each part is HF's model; run whole, its generator logits and its discriminator's
    logits on the corrupted ids are HF's."""
    discriminator = models["discriminator"]
    generator = _build("generator", 11)
    generator.electra.embeddings.load_state_dict(discriminator.electra.embeddings.state_dict())
    assert generator.generator_lm_head.weight is generator.electra.embeddings.word_embeddings.weight  # still tied
    d_cfg, d_params = hf.from_torch_model(discriminator)
    g_hf_cfg, g_params = hf.from_torch_model(generator)
    options = ReplacedTokenDetectionOptions(generator_hidden_size=24, generator_num_heads=2, generator_mlp_dim=40,
                                            generator_num_layers=3)
    g_cfg = electra_model.generator_config(d_cfg, options)
    assert hf.config_to_hf("electra", g_cfg, "masked_lm") == hf.config_to_hf("electra", g_hf_cfg, "masked_lm")

    for k, v in hf.flatten(d_params["encoder"]["embedder"]).items():  # the shared part: identical
        if not k.startswith("projection/"):
            np.testing.assert_array_equal(v, hf.flatten(g_params["encoder"]["embedder"])[k], err_msg=k)
    joint = {"encoder": d_params["encoder"], "discriminator_head": d_params["discriminator_head"],
             "generator": {"stack": g_params["encoder"]["stack"],
                           "projection": g_params["encoder"]["embedder"]["projection"]},
             "generator_head": g_params["mlm_head"]}
    module = electra_model.ReplacedTokenDetection(d_cfg, g_cfg)
    ids, segments, mask = _inputs()
    positions = np.array([[1, 3, 6], [2, 5, 0], [1, 2, 0]])
    masked_ids = np.array([[5, 6, 7], [8, 9, 0], [10, 11, 0]])
    weights = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
    inputs = dict(input_ids=jnp.asarray(ids), masked_positions=jnp.asarray(positions),
                  masked_ids=jnp.asarray(masked_ids), masked_weights=jnp.asarray(weights),
                  segment_ids=jnp.asarray(segments), attention_mask=jnp.asarray(mask))
    expected = jax.eval_shape(lambda: module.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                                                  **inputs))["params"]
    assert shapes(joint) == shapes(expected)

    disc_part, gen_part = electra_model.split_generator(joint)
    jax.tree.map(np.testing.assert_array_equal, disc_part, d_params)
    jax.tree.map(np.testing.assert_array_equal, gen_part, g_params)
    ours_d = _ours(encoder.EncoderForTokenDetection(d_cfg), disc_part, ids, segments, mask)["detection_logits"]
    ours_g = _ours(encoder.EncoderForMaskedLM(g_cfg), gen_part, ids, segments, mask)["mlm_logits"]
    ref_g = _hf(generator, ids, segments, mask).logits
    diffs = {"discriminator": maxdiff(ours_d, _hf(discriminator, ids, segments, mask).logits),
             "generator": maxdiff(ours_g, ref_g)}

    out = module.apply({"params": joint}, **inputs, rngs={"sample": jax.random.key(3)})
    corrupted = np.asarray(out["corrupted"])
    rows = np.arange(3)[:, None]
    chosen = np.zeros(ids.shape, bool)
    chosen[rows, positions] = weights > 0
    assert (corrupted[chosen] != ids[chosen]).any() and (corrupted[~chosen] == ids[~chosen]).all()
    diffs["joint_generator"] = maxdiff(out["generator_logits"], ref_g.numpy()[rows, positions])
    diffs["joint_discriminator"] = maxdiff(out["detection_logits"],
                                            _hf(discriminator, corrupted, segments, mask).logits)
    print(diffs)
    assert max(diffs.values()) <= TOL, diffs


# ---------------------------------------------------------------- a plmjax ELECTRA run -> HF


def test_a_training_run_exports_as_discriminator_and_generator(electra_run, tmp_path, capsys):
    workdir, out = electra_run, tmp_path / "hf"
    assert directory.head(workdir) is None  # the joint model is none of the single-model heads
    assert main(["convert", "--to", "hf", workdir, "--out", str(out)]) == 0
    assert f"wrote HF electra model to {out}, and its generator to {out / 'generator'}" in capsys.readouterr().out

    config = directory.read_config(workdir)
    assert config.objective.kind == "replaced_token_detection"
    params, step = directory.restore_task_params(workdir, config)
    assert step == 16
    disc_params, gen_params = electra_model.split_generator(params)
    g_cfg = electra_model.generator_config(config.model, config.objective.replaced_token_detection)
    assert (g_cfg.hidden_size, g_cfg.emb_dim, config.model.emb_dim) == (16, 24, 24)

    discriminator, info = transformers.ElectraForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    generator, info = transformers.ElectraForMaskedLM.from_pretrained(out / "generator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert (generator.config.hidden_size, generator.config.embedding_size) == (16, 24)
    for d in (out, out / "generator"):
        assert (d / "tokenizer.json").read_text() == open(os.path.join(workdir, "tokenizer.json")).read()

    ids, segments, mask = _inputs(vocab=600, length=20)
    ours_d = _ours(encoder.EncoderForTokenDetection(config.model), disc_params, ids, segments, mask)
    ours_g = _ours(encoder.EncoderForMaskedLM(g_cfg), gen_params, ids, segments, mask)
    ref_d = _hf(discriminator.eval(), ids, segments, mask).logits
    ref_g = _hf(generator.eval(), ids, segments, mask).logits
    diffs = {"discriminator": maxdiff(ours_d["detection_logits"], ref_d),
             "generator": maxdiff(ours_g["mlm_logits"], ref_g),
             "discriminator_hidden": maxdiff(ours_d["hidden"], _hidden(discriminator, ids, segments, mask)),
             "generator_hidden": maxdiff(ours_g["hidden"], _hidden(generator, ids, segments, mask))}
    print(diffs)
    assert max(diffs.values()) <= TOL, diffs
    # a few steps from a 0.02-scale init leave the detection logits small: they must match relative to their size too
    for name, ref in (("discriminator", ref_d), ("generator", ref_g)):
        assert diffs[name] <= 1e-3 * float(ref.abs().max()), (name, diffs[name], float(ref.abs().max()))

    d_sd, g_sd = state_dict(discriminator), state_dict(generator)
    shared = [k for k in d_sd if k.startswith("electra.embeddings.")]
    assert len(shared) == 5  # word, position and segment tables and the LayerNorm's scale and bias
    for k in shared:
        np.testing.assert_array_equal(d_sd[k], g_sd[k], err_msg=k)
    assert d_sd["electra.embeddings_project.weight"].shape == (32, 24)
    assert g_sd["electra.embeddings_project.weight"].shape == (16, 24)
    np.testing.assert_array_equal(g_sd["generator_lm_head.weight"], g_sd["electra.embeddings.word_embeddings.weight"])


# ---------------------------------------------------------------- `plmjax convert` on HF directories


@pytest.fixture(scope="module")
def wordpiece():
    return Tokenizer.train(DOCS, "wordpiece", 300)


@pytest.mark.parametrize("name", ["discriminator", "generator"])
def test_convert_cli_from_hf_and_back(wordpiece, tmp_path, name):
    cls_name, config, head, module_cls = CASES[name]
    hf_dir, out, back = tmp_path / "release", str(tmp_path / "converted"), tmp_path / "back"
    vocab = wordpiece.vocab_size
    model = perturbed(getattr(transformers, cls_name)(transformers.ElectraConfig(**dict(config, vocab_size=vocab))), 5)
    model.save_pretrained(hf_dir)
    wordpiece.save(hf_dir / "tokenizer.json")
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0

    loaded = directory.load(out)
    assert loaded.head == head and type(loaded.module()) is module_cls
    assert loaded.config.objective.kind == ("replaced_token_detection" if head != "masked_lm" else "mlm")
    assert loaded.tokenizer.encode(TEXT) == wordpiece.encode(TEXT)
    ids, segments, mask = _inputs(vocab=vocab)
    key = "detection_logits" if head == "replaced_token_detection" else "mlm_logits"
    ours = loaded.module().apply({"params": loaded.params}, ids, segments, mask)[key]
    theirs = _hf(model, ids, segments, mask).logits
    assert maxdiff(ours, theirs) <= TOL

    assert main(["convert", "--to", "hf", out, "--out", str(back)]) == 0
    original, exported = hf.read_state_dict(hf_dir), hf.read_state_dict(back)
    assert sorted(exported) == sorted(original)
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)
    assert json.loads((back / "config.json").read_text())["architectures"] == [cls_name]
    again = getattr(transformers, cls_name).from_pretrained(back).eval()
    np.testing.assert_array_equal(_hf(again, ids, segments, mask).logits.numpy(), theirs.numpy())
    assert (back / "tokenizer.json").is_file()
    if name == "discriminator":  # fine-tunes from the converted directory like BERT does
        tuned = fine_tune_glue_rte(out, str(tmp_path / "rte"))
        assert tuned["model"]["hidden_size"] == config["hidden_size"] and tuned["data"]["mixture"] == "glue_rte_features"


# ---------------------------------------------------------------- refused inputs


def test_a_config_that_does_not_fit_is_an_error_naming_the_parameter(models):
    sd = state_dict(models["discriminator"])
    cfg = hf.config_from_hf({**models["discriminator"].config.to_dict(), "embedding_size": 8})
    with pytest.raises(ValueError) as caught:
        hf.params_from_hf("electra", sd, cfg, head="replaced_token_detection")
    error = str(caught.value)
    assert "electra.embeddings.word_embeddings.weight: got (99, 16), expected (99, 8)" in error
    assert "electra.embeddings_project.weight: got (32, 16), expected (32, 8)" in error
    assert "electra.embeddings.LayerNorm.weight: got (16,), expected (8,)" in error

    same = hf.config_from_hf({**models["discriminator"].config.to_dict(), "embedding_size": 32})
    with pytest.raises(ValueError, match=r"unexpected keys:\n  electra\.embeddings_project\.weight"):
        hf.params_from_hf("electra", sd, same)


def test_wrong_heads_and_classes_are_refused(models, tmp_path, capsys):
    sd = state_dict(models["discriminator"])
    cfg = hf.config_from_hf(models["discriminator"].config)
    with pytest.raises(ValueError, match=r"missing keys:\n  generator_predictions\.dense\.weight(.|\n)*"
                                         r"the keys look like head='replaced_token_detection'"):
        hf.params_from_hf("electra", sd, cfg, head="masked_lm")
    with pytest.raises(ValueError, match="unknown ELECTRA head 'pretraining'"):
        hf.params_from_hf("electra", sd, cfg, head="pretraining")

    gen = state_dict(models["generator"])
    gen_cfg = hf.config_from_hf(models["generator"].config)
    untied = dict(gen, **{"generator_lm_head.weight": gen["generator_lm_head.weight"] + 1})
    with pytest.raises(ValueError, match="generator_lm_head.weight differs from electra.embeddings.word_embeddings"):
        hf.params_from_hf("electra", untied, gen_cfg, head="masked_lm")
    with pytest.raises(ValueError, match="generator head applies gelu"):
        hf.params_from_hf("electra", gen, dataclasses.replace(gen_cfg, activation="relu"), head="masked_lm")
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        hf.config_from_hf({**models["generator"].config.to_dict(), "tie_word_embeddings": False})

    tiny = transformers.ElectraConfig(**DISCRIMINATOR)
    classifier = transformers.ElectraForSequenceClassification(tiny)
    with pytest.raises(ValueError, match="HF ElectraForSequenceClassification has no plmjax counterpart"):
        hf.from_torch_model(classifier)
    for cls in (transformers.ElectraForSequenceClassification, transformers.ElectraForTokenClassification,
                transformers.ElectraForQuestionAnswering, transformers.ElectraModel):
        with pytest.raises(ValueError, match=f"looks like an HF {cls.__name__}, which has no plmjax counterpart"):
            hf.params_from_hf("electra", state_dict(cls(tiny)), cfg)
    classifier.save_pretrained(tmp_path / "classifier")
    assert main(["convert", "--from", "hf", str(tmp_path / "classifier"), "--out", str(tmp_path / "out")]) == 2
    assert "looks like an HF ElectraForSequenceClassification" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
