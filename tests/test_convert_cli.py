"""`plmjax convert` on HF directories, as a user runs it: tiny random models of every family saved with
save_pretrained, converted, run (compared with transformers), and exported back to identical tensors;
loading that refuses bad files and misfit configs; converted checkpoints on a sharded mesh and as
the start of fine-tuning."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

import torch
from hf_reference import perturbed
import transformers

from pydoc_data.topics import topics  # noqa: E402

from plmjax import embed  # noqa: E402
from plmjax.cli import main  # noqa: E402
from plmjax.convert import directory, hf  # noqa: E402
from plmjax.data.tokenizer import Tokenizer  # noqa: E402
from plmjax.training.checkpoints import CheckpointMismatchError  # noqa: E402

DOCS = list(topics.values())[:20]
TEXT = "The for statement is used to iterate over the elements of a sequence."
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)




def _byte_bpe(specials: list[str], post_processor=None) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(DOCS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = post_processor
    return tok


def _unigram() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(DOCS, trainers.UnigramTrainer(vocab_size=140, special_tokens=["<pad>", "</s>", "<unk>"],
                                                          unk_token="<unk>", show_progress=False))
    tok.add_special_tokens([f"<extra_id_{k}>" for k in reversed(range(10))])
    return tok


def _bert_vocab(path) -> int:
    """A vocab.txt (BERT's vocabulary format) of a WordPiece trained on the corpus; returns its size."""
    wordpiece = Tokenizer.train(DOCS, "wordpiece", 512)
    vocab = sorted(wordpiece.hf.get_vocab().items(), key=lambda kv: kv[1])
    path.write_text("\n".join(token for token, _ in vocab) + "\n", encoding="utf-8")
    return len(vocab)


def _save(model, directory, tokenizer: tokenizers.Tokenizer | None = None):
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save(str(directory / "tokenizer.json"))


def _bert(tmp, cls=transformers.BertForPreTraining):
    size = _bert_vocab(tmp / "vocab.txt")
    config = transformers.BertConfig(vocab_size=size, max_position_embeddings=64, **TINY)
    _save(perturbed(cls(config), 1), tmp)


def _roberta(tmp, cls=transformers.RobertaModel):
    tokenizer = _byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                          processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False))
    config = transformers.RobertaConfig(vocab_size=300, max_position_embeddings=66, type_vocab_size=1,
                                        num_labels=3, pad_token_id=1, **TINY)
    _save(perturbed(cls(config), 2), tmp, tokenizer)


def _gpt2(tmp):
    config = transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    _save(perturbed(transformers.GPT2LMHeadModel(config), 3), tmp, _byte_bpe(["<|endoftext|>"]))


def _t5(tmp, v1_1: bool):
    config = transformers.T5Config(vocab_size=150, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
                                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   feed_forward_proj="gated-gelu" if v1_1 else "relu", tie_word_embeddings=not v1_1,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    if v1_1:  # a real v1.1 checkpoint has its own LM head
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.2)
    _save(perturbed(model, 4), tmp, _unigram())


CASES = {
    "bert": _bert,
    "bert_model": lambda tmp: _bert(tmp, transformers.BertModel),
    "roberta": _roberta,
    "roberta_classifier": lambda tmp: _roberta(tmp, transformers.RobertaForSequenceClassification),
    "gpt2": _gpt2,
    "t5": lambda tmp: _t5(tmp, False),
    "t5_v1_1": lambda tmp: _t5(tmp, True),
}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """name -> (HF directory, plmjax converted directory), built and converted once per module."""
    made = {}

    def get(name):
        if name not in made:
            hf_dir = tmp_path_factory.mktemp(name)
            CASES[name](hf_dir)
            out = str(tmp_path_factory.mktemp(f"{name}_converted") / "ckpt")
            assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0
            made[name] = (hf_dir, out)
        return made[name]

    return get


def _hf_model(hf_dir):
    architecture = json.loads((hf_dir / "config.json").read_text())["architectures"][0]
    return getattr(transformers, architecture).from_pretrained(hf_dir).eval()


def _outputs(model, loaded, ids, mask):
    """(ours, HF's) main output on one right-padded batch."""
    cfg, params = loaded.config.model, loaded.params
    t = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    with torch.no_grad():
        if cfg.arch == "encoder_decoder":
            decoder_ids = ids[:, ::-1] * mask[:, ::-1]
            theirs = model(**t, decoder_input_ids=torch.from_numpy(decoder_ids)).logits
            ours = loaded.module().apply({"params": params}, ids * mask, decoder_ids)
        elif cfg.arch == "decoder":
            theirs, ours = model(input_ids=t["input_ids"]).logits, loaded.module().apply({"params": params}, ids)
        elif loaded.head == "sequence_classification":
            theirs, ours = model(**t).logits, loaded.module().apply({"params": params}, ids, attention_mask=mask)
        else:
            theirs = model.base_model(**t).last_hidden_state
            ours = embed.hidden_states(cfg, params["encoder"], ids, np.zeros_like(ids), mask)
    return np.asarray(ours), theirs.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_convert_run_and_export_back(released, tmp_path, name):
    hf_dir, out = released(name)
    loaded = directory.load(out)
    model = _hf_model(hf_dir)

    rng = np.random.default_rng(0)
    pad = loaded.config.model.pad_token_id
    ids = rng.integers(3, 100, size=(2, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # right padding: RoBERTa's offset positions must still line up
    if loaded.config.model.arch != "decoder":
        ids = np.where(mask == 1, ids, pad)
    ours, theirs = _outputs(model, loaded, ids, mask)
    real = mask.astype(bool) if ours.ndim == 3 else slice(None)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)

    back = tmp_path / "back"
    assert main(["convert", "--to", "hf", out, "--out", str(back)]) == 0
    original, exported = hf.read_state_dict(hf_dir), hf.read_state_dict(back)
    assert sorted(exported) == sorted(original)
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key], err_msg=key)
    ours_again, theirs_again = _outputs(_hf_model(back), loaded, ids, mask)
    np.testing.assert_array_equal(theirs_again, theirs)  # the exported config.json rebuilds the same model


@pytest.mark.parametrize("name, specials", [("roberta", {"pad_id": 1, "eos_id": 2, "unk_id": 3}),
                                            ("gpt2", {"pad_id": 0, "eos_id": 0, "unk_id": 0}),
                                            ("t5", {"pad_id": 0, "eos_id": 1, "unk_id": 2, "num_sentinels": 10})])
def test_released_tokenizers_convert(released, name, specials):
    hf_dir, out = released(name)
    tokenizer = directory.load_tokenizer(out, directory.read_config(out))
    original = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    assert tokenizer.encode(TEXT) == original.encode(TEXT, add_special_tokens=False).ids
    assert {k: getattr(tokenizer, k) for k in specials} == specials


def test_bert_vocab_txt_and_eval_on_a_converted_checkpoint(released, capsys):
    hf_dir, out = released("bert")
    tokenizer = directory.load_tokenizer(out, directory.read_config(out))
    reference = transformers.BertTokenizer(vocab=str(hf_dir / "vocab.txt"))(TEXT).input_ids
    assert embed.encode(tokenizer, [TEXT], 64)["input_ids"][0].tolist()[:len(reference)] == reference
    assert reference.count(tokenizer.unk_id) == 0
    quick = ["--set", "data.seq_length=32", "--set", "data.batch_size=8", "--set", "train.eval_steps=1"]
    assert main(["eval", "--checkpoint", out] + quick) == 0
    report = capsys.readouterr().out
    assert f"eval of {out} at step 0" in report and "mlm_loss" in report


def test_decode_a_converted_gpt2_equals_hf_greedy(released, capsys):
    hf_dir, out = released("gpt2")
    tokenizer = directory.load_tokenizer(out, directory.read_config(out))
    assert main(["decode", "--checkpoint", out, "--prompt", TEXT, "--max-new-tokens", "6"]) == 0
    ours = capsys.readouterr().out.strip().splitlines()[-1].split("\t")[1]
    ids = torch.tensor([tokenizer.encode(TEXT)])
    generated = _hf_model(hf_dir).generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert ours == tokenizer.decode(generated[0, ids.shape[1]:].tolist())


def test_a_config_that_does_not_fit_is_one_error_naming_everything(released, tmp_path, capsys):
    _, out = released("bert_model")
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXT + "\n")
    args = ["embed", "--checkpoint", out, "--input", str(texts), "--out", str(tmp_path / "v.npy")]
    assert main(args + ["--set", "model.mlp_dim=48"]) == 2
    error = capsys.readouterr().err
    assert "mis-shaped: encoder/stack/layers_0/mlp/wi/kernel: checkpoint (32, 64) vs model (32, 48)" in error
    assert "encoder/stack/layers_1/mlp/wo/kernel: checkpoint (64, 32) vs model (48, 32)" in error
    assert not (tmp_path / "v.npy").exists()

    cfg = directory.read_config(out).model
    with pytest.raises(CheckpointMismatchError) as caught:  # a BertModel checkpoint is no pretraining model
        directory.restore_params(out, directory.abstract_params(cfg, "pretraining"))
    assert "missing from the checkpoint: nsp_head/kernel (32, 2)" in str(caught.value)
    assert "missing from the checkpoint: mlm_head/bias (512,)" in str(caught.value)


def test_hf_config_that_does_not_fit_the_weights(released, tmp_path, capsys):
    hf_dir, _ = released("bert_model")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    config = json.loads((hf_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3, "intermediate_size": 48}))
    assert main(["convert", "--from", "hf", str(bad), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "missing keys:\n  encoder.layer.2.attention.self.query.weight (expected shape (32, 32))" in error
    assert "encoder.layer.0.intermediate.dense.weight: got (64, 32), expected (48, 32)" in error
    assert not (tmp_path / "out").exists()


class _Bomb:
    def __reduce__(self):
        return (os.system, ("touch pickle_bomb_went_off",))


def test_a_pickle_bomb_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    release = tmp_path / "release"
    release.mkdir()
    (release / "config.json").write_text(json.dumps({"model_type": "bert", **transformers.BertConfig(
        vocab_size=64, max_position_embeddings=16, **TINY).to_dict()}))
    torch.save({"bert.embeddings.word_embeddings.weight": _Bomb()}, release / "pytorch_model.bin")
    assert main(["convert", "--from", "hf", str(release), "--out", str(tmp_path / "out")]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    assert not (tmp_path / "pickle_bomb_went_off").exists()


def test_init_from_restores_into_a_sharded_state_and_fine_tunes(released, tmp_path, capsys):
    from plmjax.training.trainer import Trainer

    _, out = released("bert")
    workdir = str(tmp_path / "run")
    args = ["--set", "mesh.data=4", "--set", "mesh.model=2", "--set", "data.seq_length=32",
            "--set", "data.batch_size=8", "--set", "train.eval_steps=1", "--set", "train.log_every=1"]
    config = directory.init_config(directory.read_config(out, args[1::2]), out)
    trainer = Trainer(config, str(tmp_path / "probe"), progress=False)
    state = trainer.initial_state()
    converted, _ = directory.restore_params(out, directory.abstract_params(config.model, "pretraining"))
    wi = state.params["encoder"]["stack"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "model") and len(wi.addressable_shards) == 8
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        np.testing.assert_array_equal(np.asarray(leaf), _at(converted, path), err_msg=jax.tree_util.keystr(path))
    assert int(state.step) == 0 and all(float(np.abs(x).max()) == 0 for x in jax.tree.leaves(state.opt_state)
                                        if np.issubdtype(x.dtype, np.floating))
    trainer.close()

    assert main(["train", "--init_from", out, "--workdir", workdir, "--no-progress", "--set", "train.num_steps=3",
                 "--set", "runtime.kernel_grads_in_layout=false"] + args) == 0  # how it ran is not what it is
    assert "\neval step 3: " in "\n" + capsys.readouterr().out
    run_config = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert run_config["train"]["init_from"] == os.path.abspath(out)
    assert run_config["data"]["vocab"] == os.path.join(os.path.abspath(out), "tokenizer.json")
    tuned, step = directory.restore_params(workdir, directory.abstract_params(config.model))
    assert step == 3
    moved = np.abs(tuned["encoder"]["stack"]["layers_0"]["mlp"]["wi"]["kernel"]
                   - converted["encoder"]["stack"]["layers_0"]["mlp"]["wi"]["kernel"]).max()
    assert 0 < moved < 0.01  # three small steps away from the released weights

    back = tmp_path / "tuned_hf"  # and the fine-tuned run exports to HF (runtime settings aside), config from plmjax's
    assert main(["convert", "--to", "hf", workdir, "--out", str(back)]) == 0
    model, info = transformers.BertForPreTraining.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and (back / "tokenizer.json").exists()
    ids = np.random.default_rng(0).integers(5, 500, size=(2, 12))
    with torch.no_grad():
        theirs = model.eval().bert(torch.from_numpy(ids)).last_hidden_state.numpy()
    ours = embed.hidden_states(config.model, tuned["encoder"], ids, np.zeros_like(ids), np.ones_like(ids))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return np.asarray(tree)
