"""Released checkpoints without NSP, and T5 with only its SentencePiece model (issue #4).

MLM-only encoders: HF BertForMaskedLM and RobertaForMaskedLM (tiny, random, every weight perturbed)
convert to EncoderForMaskedLM with MLM logits equal to transformers', export back to identical
tensors, and a converted RobertaForMaskedLM directory trains with nsp=false. T5: a release with a
spiece.model and no tokenizer.json converts, decodes and evaluates with that vocabulary, whose ids
equal transformers' T5Tokenizer's.
"""

from __future__ import annotations

import json
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
from hf_reference import perturbed
import transformers
import sentencepiece as spm

from pydoc_data.topics import topics  # noqa: E402

from plmjax.cli import main  # noqa: E402
from plmjax.convert import directory, hf  # noqa: E402
from plmjax.data.tokenizer import Tokenizer  # noqa: E402
from plmjax.models import encoder  # noqa: E402

TOL = 1e-4
VOCAB = 300
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
DOCS = list(topics.values())[:20]
SENTENCES = ["The for statement is used to iterate over the elements of a sequence.",
             "Names refer to objects; names are introduced by name binding operations.",
             "A   sentence with  odd spacing, digits 12345 and ümlauts!"]




def _bert():
    torch.manual_seed(0)
    return perturbed(transformers.BertForMaskedLM(transformers.BertConfig(**TINY)), 1)


def _roberta():
    torch.manual_seed(0)  # pad 0, as the WordPiece tokenizer the training test uses
    config = transformers.RobertaConfig(**TINY, type_vocab_size=1, pad_token_id=0)
    return perturbed(transformers.RobertaForMaskedLM(config), 2)


MODELS = {"bert": _bert, "roberta": _roberta}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in MODELS.items()}


def _state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_masked_lm_logits_equal_hf(models, name, scan):
    model = models[name]
    assert hf.head_from_hf(model) == "masked_lm"
    cfg, params = hf.from_torch_model(model, scan_layers=scan)  # head inferred from the HF class
    assert hf.module_for(cfg, "masked_lm") is encoder.EncoderForMaskedLM
    rng = np.random.default_rng(0)
    mask = np.ones((3, 12), np.int64)
    mask[1, 7:] = 0
    mask[2, 4:] = 0  # right padding: RoBERTa's offset positions must still line up
    ids = np.where(mask == 1, rng.integers(3, VOCAB, size=mask.shape), cfg.pad_token_id)
    with torch.no_grad():
        theirs = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    module = encoder.EncoderForMaskedLM(cfg)
    expected = flax.core.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(ids)))["params"]
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, expected)
    ours = np.asarray(module.apply({"params": params}, ids, attention_mask=mask)["mlm_logits"])
    real = mask.astype(bool)
    diff = float(np.abs(ours[real] - theirs[real]).max())
    print(name, "scan" if scan else "", "max |mlm logits diff|", diff)
    assert diff <= TOL


@pytest.mark.parametrize("name", list(MODELS))
def test_masked_lm_round_trip(models, name):
    model = models[name]
    cfg, sd = hf.config_from_hf(model.config), _state_dict(model)
    params = hf.params_from_hf(name, sd, cfg, head="masked_lm")
    back = hf.params_to_hf(name, params, cfg, head="masked_lm")
    assert set(back) == set(sd)  # tied decoder weight and bias included
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # the same names as EncoderForPretraining's, so the two exchange encoder and MLM head
    pretraining = encoder.EncoderForPretraining(cfg).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))
    shared = set(hf.flatten(flax.core.meta.unbox(pretraining)["params"]))
    assert set(hf.flatten(params)) <= shared


def test_config_architectures_yield_to_the_keys(models):
    """Hub bert-base-uncased says BertForMaskedLM yet holds pooler and NSP weights: it converts whole."""
    torch.manual_seed(0)
    pretraining = transformers.BertForPreTraining(transformers.BertConfig(**TINY))
    config = {**pretraining.config.to_dict(), "architectures": ["BertForMaskedLM"]}
    assert hf.head_from_hf(config) == "masked_lm"
    assert hf.release_head(config, _state_dict(pretraining)) == "pretraining"
    assert hf.release_head(config, _state_dict(models["bert"])) == "masked_lm"


def test_convert_a_roberta_for_masked_lm_dir_and_train_without_nsp(models, tmp_path, capsys):
    hf_dir, out, workdir = tmp_path / "hf", str(tmp_path / "converted"), str(tmp_path / "run")
    models["roberta"].save_pretrained(hf_dir)
    Tokenizer.train(DOCS, "wordpiece", VOCAB).save(hf_dir / "tokenizer.json")
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0
    loaded = directory.load(out)
    assert loaded.head == "masked_lm" and loaded.config.objective.mlm.nsp is False
    cfg, params = hf.from_torch_model(models["roberta"])
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)

    back = tmp_path / "back"  # and back to HF: the same tensors, loadable as RobertaForMaskedLM
    assert main(["convert", "--to", "hf", out, "--out", str(back)]) == 0
    _, info = transformers.RobertaForMaskedLM.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    quick = ["--set", "data.seq_length=32", "--set", "data.batch_size=8", "--set", "train.eval_steps=1",
             "--set", "train.log_every=1", "--set", "train.num_steps=2"]
    assert main(["train", "--init_from", out, "--workdir", workdir, "--no-progress"] + quick) == 0
    report = capsys.readouterr().out
    assert "\neval step 2: " in "\n" + report and "mlm_loss" in report and "nsp_loss" not in report
    tuned, step = directory.restore_params(workdir, directory.abstract_params(cfg, "masked_lm"))
    assert step == 2
    moved = np.abs(tuned["mlm_head"]["transform"]["kernel"] - params["mlm_head"]["transform"]["kernel"]).max()
    assert 0 < moved < 0.01
    tuned_hf = tmp_path / "tuned_hf"  # the run records its head (MLM only), so it exports as the release did
    assert main(["convert", "--to", "hf", workdir, "--out", str(tuned_hf)]) == 0
    _, info = transformers.RobertaForMaskedLM.from_pretrained(tuned_hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# ---------------------------------------------------------------- T5 with a SentencePiece model

SP_PIECES, EXTRA_IDS, T5_VOCAB = 200, 100, 304  # 300 ids, the model's table padded past them as t5-base's is


@pytest.fixture(scope="module")
def t5_release(tmp_path_factory):
    """(HF directory holding spiece.model and no tokenizer.json, its `plmjax convert` output)."""
    hf_dir = tmp_path_factory.mktemp("t5_spiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for doc in DOCS for line in doc.splitlines() if line.strip()),
        model_prefix=str(hf_dir / "sp"), vocab_size=SP_PIECES, model_type="unigram", pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1, minloglevel=2)
    config = transformers.T5Config(vocab_size=T5_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    perturbed(transformers.T5ForConditionalGeneration(config), 4).save_pretrained(hf_dir)
    shutil.move(hf_dir / "sp.model", hf_dir / "spiece.model")
    out = str(tmp_path_factory.mktemp("t5_spiece_converted") / "ckpt")
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0
    return hf_dir, out


def test_t5_spiece_ids_equal_t5_tokenizer(t5_release):
    hf_dir, out = t5_release
    assert not (hf_dir / "tokenizer.json").exists() and (hf_dir / "spiece.model").exists()
    vocab = directory.load_tokenizer(out, directory.read_config(out))
    # transformers 5's T5Tokenizer takes a piece list; from_pretrained reads the directory's spiece.model
    reference = transformers.T5Tokenizer.from_pretrained(hf_dir, extra_ids=EXTRA_IDS)
    assert len(reference) == SP_PIECES + EXTRA_IDS
    for text in SENTENCES:
        assert vocab.encode(text) + [vocab.eos_id] == reference(text).input_ids, text
    assert vocab.encode_batch(SENTENCES) == [vocab.encode(s) for s in SENTENCES]
    assert (vocab.pad_id, vocab.eos_id, vocab.vocab_size) == (reference.pad_token_id, reference.eos_token_id,
                                                               SP_PIECES + EXTRA_IDS)
    assert [vocab.sentinel_id(k) for k in (0, 1, 99)] == reference.convert_tokens_to_ids(
        ["<extra_id_0>", "<extra_id_1>", "<extra_id_99>"])


def test_t5_spiece_decode_equals_hf_greedy_and_eval(t5_release, capsys):
    hf_dir, out = t5_release
    vocab = directory.load_tokenizer(out, directory.read_config(out))
    assert main(["decode", "--checkpoint", out, "--prompt", SENTENCES[0], "--max-new-tokens", "6"]) == 0
    ours = capsys.readouterr().out.strip().splitlines()[-1].split("\t")[1]
    ids = torch.tensor([vocab.encode(SENTENCES[0]) + [vocab.eos_id]])
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    generated = model.generate(ids, max_new_tokens=6, do_sample=False, num_beams=1)
    assert ours == vocab.decode(generated[0, 1:].tolist())

    quick = ["--set", "data.seq_length=32", "--set", "data.batch_size=8", "--set", "train.eval_steps=1"]
    assert main(["eval", "--checkpoint", out] + quick) == 0
    report = capsys.readouterr().out
    assert f"eval of {out} at step 0" in report and "loss" in report
    assert json.loads((hf_dir / "config.json").read_text())["vocab_size"] == T5_VOCAB
