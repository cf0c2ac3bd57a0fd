"""Numerical parity with Hugging Face transformers (tiny random models, float32, CPU, no downloads).

Every HF parameter is perturbed away from its init (norm scales away from 1, biases away from 0)
so that a swapped or transposed mapping cannot hide behind a trivial value.
"""

from __future__ import annotations

import dataclasses
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
from hf_reference import maxdiff, perturbed, state_dict
import transformers

from plmjax.convert import hf  # noqa: E402
from plmjax.models.decoder import DecoderLM  # noqa: E402
from plmjax.models.encoder import EncoderForPretraining  # noqa: E402
from plmjax.models.encoder_decoder import EncoderDecoder  # noqa: E402

TOL = 1e-4
MODELS = {"bert": EncoderForPretraining, "t5": EncoderDecoder, "gpt2": DecoderLM}


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
    )
    return perturbed(transformers.BertForPreTraining(config), 1)


def _t5(v1_1: bool):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=150, d_model=32, d_kv=16, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu" if v1_1 else "relu", tie_word_embeddings=not v1_1,
        decoder_start_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(config)
    if v1_1:  # transformers 5 ties the head even for v1.1; real v1.1 checkpoints have their own
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.2)
    return perturbed(model, 2)


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=110, n_embd=32, n_layer=3, n_head=4, n_positions=32, activation_function="gelu_new",
        bos_token_id=0, eos_token_id=0,
    )
    return perturbed(transformers.GPT2LMHeadModel(config), 3)


@pytest.fixture(scope="module")
def bert_model():
    return _bert()


@pytest.fixture(scope="module")
def t5_models():
    return {False: _t5(False), True: _t5(True)}


@pytest.fixture(scope="module")
def gpt2_model():
    return _gpt2()


def _layer_outputs(intermediates, stack_path, num_layers, scanned):
    node = intermediates
    for k in stack_path:
        node = node[k]
    if scanned:
        stacked = node["layers"]["output"][0]
        assert stacked.shape[0] == num_layers
        return [stacked[i] for i in range(num_layers)]
    return [node[f"layers_{i}"]["output"][0] for i in range(num_layers)]


def _check_tree_matches_model(params, cfg, *args):
    """The converted tree has exactly the parameters (names and shapes) the model initialises."""
    model = {"encoder": EncoderForPretraining, "encoder_decoder": EncoderDecoder, "decoder": DecoderLM}[cfg.arch](cfg)
    expected = flax.core.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *args))["params"]
    shapes = lambda t: {k: tuple(v.shape) for k, v in hf.flatten(t).items()}  # noqa: E731
    assert shapes(params) == shapes(expected)


# ---------------------------------------------------------------- BERT


@pytest.mark.parametrize("scan", [False, True])
def test_bert_parity(bert_model, scan):
    cfg, params = hf.from_torch_model(bert_model, scan_layers=scan)
    assert cfg.scan_layers is scan and cfg.activation == "gelu" and cfg.norm_position == "post"
    torch.manual_seed(4)
    ids = torch.randint(1, 120, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids * mask  # pad id 0
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    with torch.no_grad():
        ref = bert_model(input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True)
    args = [jnp.asarray(x.numpy()) for x in (ids, segments, mask)]
    _check_tree_matches_model(params, cfg, *args)
    out, state = EncoderForPretraining(cfg).apply({"params": params}, *args, mutable=["intermediates"])
    layers = _layer_outputs(state["intermediates"], ("encoder", "stack"), cfg.num_layers, scan)
    assert len(layers) == len(ref.hidden_states) - 1 == 2  # BERT: every layer's output (post-norm)
    diffs = {f"layer_{i}": maxdiff(ours, theirs) for i, (ours, theirs) in enumerate(zip(layers, ref.hidden_states[1:]))}
    diffs["mlm_logits"] = maxdiff(out["mlm_logits"], ref.prediction_logits)
    diffs["nsp_logits"] = maxdiff(out["nsp_logits"], ref.seq_relationship_logits)
    print("bert", "scan" if scan else "", diffs)
    assert max(diffs.values()) <= TOL, diffs


# ---------------------------------------------------------------- T5


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("v1_1", [False, True], ids=["v1_0", "v1_1"])
def test_t5_parity(t5_models, v1_1, scan):
    model = t5_models[v1_1]
    cfg, params = hf.from_torch_model(model, scan_layers=scan)
    assert cfg.gated_ffn is v1_1 and cfg.tie_embeddings is (not v1_1) and cfg.scale_tied_logits is (not v1_1)
    assert cfg.kv_dim == 16 and cfg.num_layers == 3 and cfg.decoder_layers == 2
    torch.manual_seed(5)
    enc = torch.randint(2, 150, (2, 14))
    enc[1, 9:] = 0  # padded encoder input (pad id 0)
    enc_mask = (enc != 0).long()
    dec = torch.randint(2, 150, (2, 11))
    dec[:, 0] = 0  # decoder_start_token_id
    with torch.no_grad():
        ref = model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec, output_hidden_states=True)
    enc_j, dec_j = jnp.asarray(enc.numpy()), jnp.asarray(dec.numpy())
    _check_tree_matches_model(params, cfg, enc_j, dec_j)
    ed = EncoderDecoder(cfg)
    logits = ed.apply({"params": params}, enc_j, dec_j)
    encoded, state = ed.apply({"params": params}, enc_j, method=EncoderDecoder.encode, mutable=["intermediates"])
    # HF's hidden_states: embeddings, layers 0..L-2, then the final-normed output of layer L-1
    layers = _layer_outputs(state["intermediates"], ("encoder",), cfg.num_layers, scan)
    assert len(ref.encoder_hidden_states) == len(layers) + 1 == 4
    diffs = {f"encoder_layer_{i}": maxdiff(layers[i], ref.encoder_hidden_states[i + 1]) for i in range(len(layers) - 1)}
    diffs["encoder_last_hidden"] = maxdiff(encoded, ref.encoder_last_hidden_state)
    diffs["lm_logits"] = maxdiff(logits, ref.logits)
    print("t5", "v1_1" if v1_1 else "v1_0", "scan" if scan else "", diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_t5_v1_1_without_lm_head_uses_shared(t5_models):
    """transformers >= 5 saves tied v1.1 models without lm_head.weight; HF then ties it to shared."""
    model = t5_models[True]
    cfg = hf.config_from_hf(model.config)
    sd = state_dict(model)
    del sd["lm_head.weight"]
    params = hf.params_from_hf("t5", sd, cfg)
    np.testing.assert_array_equal(params["lm_head"]["kernel"], sd["shared.weight"].T)


def test_t5_config_from_old_style_dict(t5_models):
    """Hub v1.1 config.json files say tie_word_embeddings=false and have no scale_decoder_outputs."""
    d = t5_models[True].config.to_dict()
    d.pop("scale_decoder_outputs")
    d["tie_word_embeddings"] = False
    cfg = hf.config_from_hf(d)
    assert not cfg.tie_embeddings and not cfg.scale_tied_logits and cfg.activation == "gelu_tanh"
    d = t5_models[False].config.to_dict()
    d.pop("scale_decoder_outputs")
    cfg = hf.config_from_hf(d)
    assert cfg.tie_embeddings and cfg.scale_tied_logits and cfg.activation == "relu"
    assert cfg.dropout_rate == cfg.attention_dropout_rate == d["dropout_rate"]


# ---------------------------------------------------------------- GPT-2


@pytest.mark.parametrize("scan", [False, True])
def test_gpt2_parity(gpt2_model, scan):
    cfg, params = hf.from_torch_model(gpt2_model, scan_layers=scan)
    assert cfg.activation == "gelu_tanh" and cfg.norm_eps == 1e-5 and cfg.mlp_dim == 128
    torch.manual_seed(6)
    ids = torch.randint(0, 110, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # right padding
    with torch.no_grad():
        ref = gpt2_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    ids_j, mask_j = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
    _check_tree_matches_model(params, cfg, ids_j)
    logits, state = DecoderLM(cfg).apply(
        {"params": params}, ids_j, attention_mask=mask_j, capture_intermediates=True, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    layers = _layer_outputs(inter, ("stack",), cfg.num_layers, scan)
    # HF's hidden_states: embeddings, layers 0..L-2, then ln_f of layer L-1's output
    assert len(ref.hidden_states) == len(layers) + 1 == 4
    diffs = {f"layer_{i}": maxdiff(layers[i], ref.hidden_states[i + 1]) for i in range(len(layers) - 1)}
    diffs["last_hidden"] = maxdiff(inter["stack"]["__call__"][0], ref.hidden_states[-1])
    diffs["logits"] = maxdiff(logits, ref.logits)
    print("gpt2", "scan" if scan else "", diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_gpt2_unprefixed_checkpoint_with_old_buffers(gpt2_model):
    """GPT2Model checkpoints (hub 'gpt2') lack 'transformer.' and carry attn.bias / masked_bias buffers."""
    cfg = hf.config_from_hf(gpt2_model.config)
    sd = state_dict(gpt2_model)
    old = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    old["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
    old["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    a, b = hf.params_from_hf("gpt2", old, cfg), hf.params_from_hf("gpt2", sd, cfg)
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ---------------------------------------------------------------- round trip and errors


ROUND_TRIP = [("bert", False), ("bert", True), ("t5_v1_0", False), ("t5_v1_1", True), ("gpt2", False), ("gpt2", True)]


@pytest.mark.parametrize("name,scan", ROUND_TRIP)
def test_round_trip(bert_model, t5_models, gpt2_model, name, scan):
    model = {"bert": bert_model, "t5_v1_0": t5_models[False], "t5_v1_1": t5_models[True], "gpt2": gpt2_model}[name]
    model_type = model.config.model_type
    cfg = hf.config_from_hf(model.config, scan_layers=scan)
    sd = state_dict(model)
    params = hf.params_from_hf(model_type, sd, cfg)
    if scan:
        assert any("/layers/" in p for p in hf.flatten(params))
    back = hf.params_to_hf(model_type, params, cfg)
    assert set(back) == set(sd)  # these HF versions keep no unused buffers in state_dict()
    for k in sd:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    if model_type == "gpt2":  # boxed params straight from model.init convert too (both layouts)
        boxed = MODELS[model_type](cfg).init(jax.random.PRNGKey(0), *_dummy_inputs(model_type))
        assert set(hf.params_to_hf(model_type, boxed, cfg)) == set(sd)


def _dummy_inputs(model_type):
    ids = jnp.ones((1, 4), jnp.int32)
    return (ids, ids) if model_type == "t5" else (ids,)


def test_missing_and_misshaped_keys(bert_model):
    cfg = hf.config_from_hf(bert_model.config)
    sd = state_dict(bert_model)
    missing = dict(sd)
    del missing["bert.encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(ValueError, match=r"missing keys:\n  bert\.encoder\.layer\.1\.attention\.self\.key\.weight \(expected shape \(32, 32\)\)"):
        hf.params_from_hf("bert", missing, cfg)
    bad = dict(sd)
    bad["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((65, 32), np.float32)
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight: got \(65, 32\), expected \(64, 32\)"):
        hf.params_from_hf("bert", bad, cfg)
    extra = dict(sd)
    extra["bert.encoder.layer.2.output.dense.weight"] = np.zeros((32, 64), np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys:\n  bert\.encoder\.layer\.2\.output\.dense\.weight \(32, 64\)"):
        hf.params_from_hf("bert", extra, cfg)
    # a config that does not match the checkpoint is reported as mis-shaped keys
    with pytest.raises(ValueError, match=r"word_embeddings\.weight: got \(120, 32\), expected \(121, 32\)"):
        hf.params_from_hf("bert", sd, dataclasses.replace(cfg, vocab_size=121))
    untied = dict(sd)
    untied["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match=r"cls\.predictions\.decoder\.weight differs from bert\.embeddings"):
        hf.params_from_hf("bert", untied, cfg)
    with pytest.raises(ValueError, match="unsupported HF model_type 'xlnet'"):
        hf.config_from_hf({"model_type": "xlnet"})


def test_bert_old_checkpoint_names(bert_model):
    """TF-era checkpoints: LayerNorm.gamma/beta and a persisted position_ids buffer."""
    cfg = hf.config_from_hf(bert_model.config)
    sd = state_dict(bert_model)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in sd.items()}
    old["bert.embeddings.position_ids"] = np.arange(40)[None]
    jax.tree.map(np.testing.assert_array_equal, hf.params_from_hf("bert", old, cfg), hf.params_from_hf("bert", sd, cfg))


def test_config_from_json_dict_matches_object(bert_model, gpt2_model, tmp_path):
    for model in (bert_model, gpt2_model):
        model.config.save_pretrained(tmp_path)
        d = json.loads((tmp_path / "config.json").read_text())
        assert hf.config_from_hf(d) == hf.config_from_hf(model.config)
    cfg = hf.config_from_hf(bert_model.config)
    assert (cfg.dropout_rate, cfg.attention_dropout_rate) == (0.1, 0.1)
    assert (cfg.norm_eps, cfg.max_length, cfg.vocab_size) == (1e-12, 40, 120)


# ---------------------------------------------------------------- reading checkpoints


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_read_state_dict(bert_model, tmp_path, capsys):
    import safetensors.numpy
    import safetensors.torch

    sd = state_dict(bert_model)
    safetensors.numpy.save_file(sd, str(tmp_path / "model.safetensors"))
    torch.save(bert_model.state_dict(), tmp_path / "pytorch_model.bin")
    for path in (tmp_path / "model.safetensors", tmp_path / "pytorch_model.bin", tmp_path):
        loaded = hf.read_state_dict(path)
        assert set(loaded) == set(sd)
        for k in sd:
            np.testing.assert_array_equal(loaded[k], sd[k])
    # a sharded checkpoint: *.index.json naming the shard files
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(sd)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        safetensors.numpy.save_file({k: sd[k] for k in part}, str(sharded / name))
        weight_map.update({k: name for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = hf.read_state_dict(sharded)
    assert set(loaded) == set(sd) and all(np.array_equal(loaded[k], sd[k]) for k in sd)
    # bfloat16 safetensors (numpy has no bfloat16) are upcast to float32
    safetensors.torch.save_file({"w": torch.arange(4, dtype=torch.bfloat16)}, str(tmp_path / "bf16.safetensors"))
    loaded = hf.read_state_dict(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == np.float32 and loaded["w"].tolist() == [0, 1, 2, 3]

    torch.save({"w": _Evil()}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        hf.read_state_dict(tmp_path / "evil.bin")
    assert "pwned" not in capsys.readouterr().out
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ValueError, match="unsupported checkpoint"):
        hf.read_state_dict(tmp_path / "weights.h5")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):
        hf.read_state_dict(tmp_path / "junk.bin")
    with pytest.raises(ValueError, match="does not exist"):
        hf.read_state_dict(tmp_path / "nope.safetensors")
