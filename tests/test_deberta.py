"""DeBERTa's parts beyond HF's classes: the enhanced mask decoder (against HF's own layer rerun with query_states,
as DeBERTa's EnhancedMaskDecoder does), gradient-disentangled embedding sharing, and the configs that cannot work."""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_reference import maxdiff, perturbed, shapes, state_dict

from plmjax import config as config_lib
from plmjax.config import ConfigError
from plmjax.convert import hf
from plmjax.flops import forward_flops
from plmjax.layers.embeddings import fold_deltas
from plmjax.models import electra
from plmjax.models.encoder import EncoderForMaskedLM

TOL = 1e-4
HF_CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                 max_position_embeddings=64, relative_attention=True, type_vocab_size=0, position_biased_input=False,
                 pos_att_type="p2c|c2p", share_att_key=True, position_buckets=8, norm_rel_ebd="layer_norm")
LENGTH = 24


def _inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 99, (2, LENGTH))
    mask = np.ones_like(ids)
    mask[1, 17:], ids[1, 17:] = 0, 0
    return ids, mask


@pytest.fixture(scope="module")
def emd():
    """(HF DebertaV2ForMaskedLM, plmjax cfg with the mask decoder, its params: HF's plus an absolute table)."""
    model = perturbed(transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**HF_CONFIG)), 11)
    plain = hf.config_from_hf(model.config)
    cfg = dataclasses.replace(plain, position_kind="learned", position_input=False, mask_decoder_passes=2)
    params = hf.params_from_hf("deberta-v2", state_dict(model), plain, "masked_lm")
    table = np.random.RandomState(1).normal(0, 0.5, (64, 32)).astype(np.float32)
    params["encoder"]["embedder"]["position"] = {"embedding": table}
    return model, cfg, params


def test_the_mask_decoder_is_the_last_layer_rerun_with_absolute_positions(emd):
    """DeBERTa's EnhancedMaskDecoder: queries = z + h[-2], then twice h = layer[-1](h[-2], query_states=h), with
    HF's own DebertaV2Layer doing the reruns, then the MLM head."""
    model, cfg, params = emd
    ids, mask = _inputs()
    ours = EncoderForMaskedLM(cfg).apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    encoder = model.deberta.encoder
    with torch.no_grad():
        hidden = model.deberta(torch.tensor(ids), attention_mask=torch.tensor(mask),
                               output_hidden_states=True).hidden_states
        kv, attention_mask = hidden[-2], encoder.get_attention_mask(torch.tensor(mask))
        queries = kv + torch.tensor(params["encoder"]["embedder"]["position"]["embedding"][:LENGTH])
        for _ in range(2):
            queries = encoder.layer[-1](kv, attention_mask, query_states=queries, relative_pos=encoder.get_rel_pos(kv),
                                        rel_embeddings=encoder.get_rel_embedding())[0]
        logits = model.cls(queries)
    real = mask.astype(bool)
    assert maxdiff(np.asarray(ours["hidden"])[real], hidden[-1].numpy()[real]) <= TOL  # the encoder is unchanged
    assert maxdiff(np.asarray(ours["mlm_logits"])[real], logits.numpy()[real]) <= TOL


def test_the_mask_decoder_runs_only_the_masked_positions_queries_and_equals_running_all(emd):
    _, cfg, params = emd
    ids, mask = _inputs()
    positions = jnp.asarray([[3, 0, 7, 7], [16, 2, 9, 11]])
    model = EncoderForMaskedLM(cfg)
    every = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))["mlm_logits"]
    some = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                       masked_positions=positions)["mlm_logits"]
    np.testing.assert_allclose(some, np.take_along_axis(np.asarray(every), np.asarray(positions)[..., None], 1),
                               rtol=0, atol=2e-5)
    flops = [forward_flops(lambda p, pos: model.apply({"params": p}, jnp.asarray(ids), masked_positions=pos), params,
                           jnp.zeros((2, n), jnp.int32)) for n in (4, LENGTH)]
    assert flops[0] < 0.8 * flops[1]  # the decoder's two reruns of a layer, on 4 queries instead of 24


def test_the_mask_decoder_reads_absolute_positions_and_adds_no_parameters(emd):
    _, cfg, params = emd
    ids, mask = _inputs()

    def run(cfg, params):
        out = EncoderForMaskedLM(cfg).apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
        return np.asarray(out["hidden"]), np.asarray(out["mlm_logits"])

    hidden, logits = run(cfg, params)
    off = dataclasses.replace(cfg, mask_decoder_passes=0)  # the plain encoder, its table unused
    plain_hidden, plain_logits = run(off, params)
    np.testing.assert_array_equal(hidden, plain_hidden)
    assert np.abs(logits - plain_logits).max() > 1e-2
    permuted = jax.tree.map(lambda x: x, params)
    table = params["encoder"]["embedder"]["position"]["embedding"]
    permuted["encoder"]["embedder"]["position"] = {"embedding": table[::-1]}
    moved_hidden, moved_logits = run(cfg, permuted)
    np.testing.assert_array_equal(moved_hidden, hidden)  # absolute positions reach nothing but the decoder
    assert np.abs(moved_logits - logits).max() > 1e-2
    fresh = EncoderForMaskedLM(cfg).init(jax.random.key(0), jnp.asarray(ids))["params"]
    fresh_off = EncoderForMaskedLM(off).init(jax.random.key(0), jnp.asarray(ids))["params"]
    assert shapes(fresh) == {**shapes(fresh_off), "encoder/embedder/position/embedding": (64, 32)}  # + the table


@pytest.fixture(scope="module")
def gdes():
    cfg = config_lib.deberta(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_length=32,
                             position_buckets=8).model
    options = dataclasses.replace(config_lib.deberta().objective.replaced_token_detection, embedding_sharing="gdes",
                                  generator_hidden_size=16, generator_num_heads=2, generator_num_layers=1)
    task = electra.ReplacedTokenDetectionTask(cfg, options)
    rng = np.random.RandomState(0)
    batch = dict(input_ids=rng.randint(5, 50, (2, 12)).astype(np.int32), segment_ids=np.zeros((2, 12), np.int32),
                 attention_mask=np.ones((2, 12), np.int32), masked_positions=np.array([[1, 3, 0], [2, 4, 5]], np.int32),
                 masked_ids=np.array([[7, 8, 0], [9, 10, 11]], np.int32),
                 masked_weights=np.array([[1, 1, 0], [1, 1, 1]], np.float32))
    params = flax.core.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])
    params["encoder"]["embedder"]["token_delta"] = 0.1 * jax.random.normal(jax.random.key(1), (50, 16))
    return task, batch, params


def test_gradient_disentangled_sharing_trains_the_table_by_the_generator_and_the_deltas_by_the_discriminator(gdes):
    task, batch, params = gdes

    def grads(name):
        return jax.grad(lambda p: task.loss(p, batch, jax.random.key(2), train=True)[1][name])(params)

    def norm(x):
        return float(jnp.abs(x).sum())

    generator, discriminator = jax.jit(lambda: (grads("generator_loss"), grads("discriminator_loss")))()
    generator, discriminator = generator["encoder"]["embedder"], discriminator["encoder"]["embedder"]
    assert norm(generator["token"]["embedding"]) > 0 and norm(generator["token_delta"]) == 0
    assert norm(discriminator["token"]["embedding"]) == 0 and norm(discriminator["token_delta"]) > 0


def test_the_discriminator_reads_table_plus_delta_which_exports_fold_in(gdes):
    task, batch, params = gdes
    embedder = params["encoder"]["embedder"]
    discriminator, generator = electra.split_generator(params)
    folded = embedder["token"]["embedding"] + embedder["token_delta"]
    np.testing.assert_array_equal(discriminator["encoder"]["embedder"]["token"]["embedding"], folded)
    np.testing.assert_array_equal(generator["encoder"]["embedder"]["token"]["embedding"],
                                  embedder["token"]["embedding"])
    assert "token_delta" not in discriminator["encoder"]["embedder"]
    jax.tree.map(np.testing.assert_array_equal, fold_deltas(params["encoder"]), discriminator["encoder"])
    # The folded discriminator, as a plain encoder, computes what the joint model's discriminator computed.
    from plmjax.models.encoder import EncoderForTokenDetection

    ids = jnp.asarray(batch["input_ids"])
    plain = EncoderForTokenDetection(task.cfg).apply({"params": discriminator}, ids)["detection_logits"]
    joint = task.module.apply({"params": params}, ids, method=lambda m, x: m.discriminator_head(m.encoder(x)))
    np.testing.assert_allclose(plain, joint, rtol=0, atol=1e-6)


@pytest.mark.parametrize("terms", ["c2p", "p2c", "c2p,p2c"])
def test_scoring_by_distance_equals_gathering_each_pair(terms):
    """Queries at 0..L-1 score the position terms once per distance and realign them (`skew`); any other queries
    gather each pair's row. Both are the same numbers."""
    from plmjax.layers.attention import AttentionInputs
    from plmjax.layers.disentangled import DisentangledKernel, RelativeEmbeddings

    cfg = config_lib.deberta(hidden_size=16, num_heads=2, max_length=32, position_buckets=8, position_terms=terms,
                             share_position_keys=False).model
    length = 11
    q, k, v = (jax.random.normal(key, (2, length, 2, 8)) for key in jax.random.split(jax.random.key(0), 3))
    positions = jnp.broadcast_to(jnp.arange(length), (2, length))
    shared_module = RelativeEmbeddings(cfg)
    shared_params = shared_module.init(jax.random.key(1), positions, positions[:1])
    shared = shared_module.apply(shared_params, positions, positions[:1])

    def run(aligned):
        inputs = AttentionInputs(None, positions, positions[:1], None, shared, aligned)
        kernel = DisentangledKernel(cfg)
        variables = kernel.init(jax.random.key(2), q, k, v, inputs)
        return kernel.apply(variables, q, k, v, inputs)[0]

    np.testing.assert_allclose(run(True), run(False), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(mask_decoder_passes=2), "needs model.position_kind=learned"),
    (dict(mask_decoder_passes=2, position_kind="learned", norm_position="pre"), "model.norm_position=post"),
    (dict(mask_decoder_passes=2, position_kind="learned", embedding_size=8), "model.embedding_size"),
    (dict(conv_kernel_size=2), "model.conv_kernel_size=2 must be odd"),
    (dict(position_terms="c2p,q2q"), "model.position_terms='c2p,q2q'"),
    (dict(position_buckets=-1), "model.position_buckets=-1 must be 0"),
    (dict(position_buckets=1), "model.position_buckets=1 must be 0"),  # half a bucket: log(x / 0)
])
def test_settings_that_cannot_work_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config_lib.deberta(hidden_size=16, num_heads=2, **fields)


def test_disentangled_attention_refuses_a_prefix_or_a_cache():
    cfg = config_lib.deberta(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=32,
                             position_buckets=8).model
    from plmjax.layers import hooks

    class Prefix(flax.linen.Module):
        cfg: object

        def __call__(self, batch):
            return (jnp.zeros((batch, 2, 2, 8)),) * 2

    hooks.KV_PREFIXES["_test_prefix"] = Prefix
    try:
        with pytest.raises(ConfigError, match="its own relative positions for every query and key"):
            EncoderForMaskedLM(dataclasses.replace(cfg, kv_prefix="_test_prefix")).init(
                jax.random.key(0), jnp.ones((1, 8), jnp.int32))
    finally:
        del hooks.KV_PREFIXES["_test_prefix"]
