"""Variants plug into the one core by config and registries, and each behaves as specified."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import bert, gpt
from plmjax.layers import activations, hooks
from plmjax.layers.attention import ATTENTION_KERNELS, Attention, AttentionInputs
from plmjax.models.decoder import DecoderLM
from plmjax.models.encoder import EncoderForPretraining

SMALL = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48, max_length=16)
IDS = jnp.asarray(np.random.default_rng(0).integers(5, 64, (2, 10)), jnp.int32)


def init(model, *args, **kwargs):
    return nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs))


def encode(cfg, variables=None, ids=IDS, mask=None):
    model = EncoderForPretraining(cfg)
    variables = variables or init(model, ids)
    return model.apply(variables, ids, attention_mask=mask)["hidden"], variables


def test_factorized_embeddings_project_a_small_table_up_to_hidden():
    cfg = bert(**SMALL, embedding_size=8, dropout_rate=0.0).model
    hidden, variables = encode(cfg)
    emb = variables["params"]["encoder"]["embedder"]
    assert emb["token"]["embedding"].shape == (64, 8)
    assert variables["params"]["mlm_head"]["transform"]["kernel"].shape == (32, 8)
    # Reference: LayerNorm(token + position + segment) then the E->H projection, in numpy.
    x = np.asarray(emb["token"]["embedding"])[np.asarray(IDS)] + np.asarray(emb["position"]["embedding"])[:10]
    x = x + np.asarray(emb["segment"]["embedding"])[0]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    x = x * emb["norm"]["scale"] + emb["norm"]["bias"]
    expected = x @ np.asarray(emb["projection"]["kernel"]) + np.asarray(emb["projection"]["bias"])
    embedder = EncoderForPretraining(cfg).bind(variables).encoder.embedder
    np.testing.assert_allclose(embedder(IDS), expected, atol=1e-5)


def test_shared_layers_equal_one_layer_applied_repeatedly():
    shared_cfg = bert(**{**SMALL, "num_layers": 4}, shared_layer_groups=1).model
    shared_out, shared_vars = encode(shared_cfg)
    assert [k for k in shared_vars["params"]["encoder"]["stack"]] == ["layers_0"]
    plain_cfg = bert(**{**SMALL, "num_layers": 4}).model
    _, plain_vars = encode(plain_cfg)
    stack = dict(plain_vars["params"]["encoder"]["stack"])
    for i in range(4):
        stack[f"layers_{i}"] = shared_vars["params"]["encoder"]["stack"]["layers_0"]
    copied = jax.tree.map(lambda x: x, shared_vars)
    copied["params"]["encoder"]["stack"] = stack
    plain_out, _ = encode(plain_cfg, copied)
    np.testing.assert_allclose(shared_out, plain_out, atol=1e-6)


class ZeroInitAdapter(nn.Module):
    """A bottleneck adapter y + up(relu(down(y))) whose up-projection starts at zero."""

    cfg: object

    @nn.compact
    def __call__(self, y, deterministic):
        h = nn.relu(nn.Dense(4, name="down")(y))
        return y + nn.Dense(y.shape[-1], kernel_init=nn.initializers.zeros, name="up")(h)


def test_residual_adapter_is_inserted_after_attention_and_ffn(monkeypatch):
    monkeypatch.setitem(hooks.RESIDUAL_ADAPTERS, "zero_init", ZeroInitAdapter)
    base_out, base_vars = encode(bert(**SMALL).model)
    cfg = bert(**SMALL, residual_adapter="zero_init").model
    _, adapter_vars = encode(cfg)
    layer = adapter_vars["params"]["encoder"]["stack"]["layers_0"]
    assert {"self_attention_adapter", "mlp_adapter"} <= set(layer)
    # With the base model's weights and zero up-projections the output is unchanged ...
    merged = jax.tree.map(lambda x: x, adapter_vars)
    for path in ("embedder", "stack"):
        for name, sub in base_vars["params"]["encoder"][path].items():
            merged["params"]["encoder"][path][name] = {**merged["params"]["encoder"][path][name], **sub}
    for name in ("pooler", "mlm_head", "nsp_head"):
        merged["params"][name] = base_vars["params"][name]
    same, _ = encode(cfg, merged)
    np.testing.assert_allclose(same, base_out, atol=1e-6)
    # ... and a trained adapter changes it.
    kernel = merged["params"]["encoder"]["stack"]["layers_0"]["mlp_adapter"]["up"]["kernel"]
    merged["params"]["encoder"]["stack"]["layers_0"]["mlp_adapter"]["up"]["kernel"] = (
        kernel + jax.random.normal(jax.random.key(2), kernel.shape))
    changed, _ = encode(cfg, merged)
    assert np.abs(changed - base_out).max() > 1e-2


def append_tokens_after_first_layer(visible: bool) -> type[nn.Module]:
    """A hook inserting 3 learned vectors after layer 0 (as late-[MASK] insertion does), real or padding."""

    class AppendTokens(nn.Module):
        cfg: object

        @nn.compact
        def __call__(self, x, mask, layer_index, deterministic):
            if layer_index != 0:
                return x, mask
            extra = self.param("tokens", nn.initializers.normal(1.0), (3, x.shape[-1]))
            x = jnp.concatenate([x, jnp.broadcast_to(extra, (x.shape[0], 3, x.shape[-1]))], axis=1)
            return x, jnp.concatenate([mask, jnp.full((x.shape[0], 3), int(visible), mask.dtype)], axis=1)

    return AppendTokens


@pytest.mark.parametrize("visible", [True, False])
def test_hidden_hook_can_insert_tokens_between_layers(monkeypatch, visible):
    monkeypatch.setitem(hooks.HIDDEN_HOOKS, "append3", append_tokens_after_first_layer(visible))
    base_out, base_vars = encode(bert(**SMALL).model)
    cfg = bert(**SMALL, hidden_hook="append3").model
    _, hook_vars = encode(cfg)
    hook_vars = jax.tree.map(lambda x: x, hook_vars)
    hook_vars["params"]["encoder"] = {**base_vars["params"]["encoder"], "stack": {
        **base_vars["params"]["encoder"]["stack"], "hidden_hook": hook_vars["params"]["encoder"]["stack"]["hidden_hook"]}}
    out, _ = encode(cfg, hook_vars)
    assert out.shape == (2, 13, 32)
    difference = np.abs(out[:, :10] - base_out).max()
    # Inserted padding is invisible to the original tokens; inserted real tokens are attended to.
    assert (difference < 1e-5) if not visible else (difference > 1e-3)


class LearnedPrefix(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, batch_size):
        shape = (2, self.cfg.num_heads, self.cfg.kv_dim)
        keys = self.param("keys", nn.initializers.normal(1.0), shape)
        values = self.param("values", nn.initializers.normal(1.0), shape)
        return (jnp.broadcast_to(keys, (batch_size,) + shape), jnp.broadcast_to(values, (batch_size,) + shape))


def test_kv_prefix_attention_matches_a_numpy_reference(monkeypatch):
    monkeypatch.setitem(hooks.KV_PREFIXES, "learned", LearnedPrefix)
    cfg = bert(**SMALL, kv_prefix="learned").model
    x = jax.random.normal(jax.random.key(1), (2, 5, 32))
    mask_bias = jnp.zeros((2, 1, 5, 5)).at[1, :, :, 4].set(-1e9)  # row 1: last token is padding
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    inputs = AttentionInputs(mask_bias, positions, positions[:1])
    attention = Attention(cfg)
    variables = init(attention, x, x, inputs)
    out, _ = attention.apply(variables, x, x, inputs)
    p = jax.tree.map(np.asarray, variables["params"])
    proj = lambda name, v: np.einsum("ble,ehd->blhd", v, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    xn = np.asarray(x)
    q = proj("query", xn)
    k = np.concatenate([np.broadcast_to(p["kv_prefix"]["keys"], (2, 2, 4, 8)), proj("key", xn)], axis=1)
    v = np.concatenate([np.broadcast_to(p["kv_prefix"]["values"], (2, 2, 4, 8)), proj("value", xn)], axis=1)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
    logits[1, :, :, 2 + 4] = -1e9
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", weights, v)
    expected = np.einsum("bqhd,hde->bqe", context, p["out"]["kernel"]) + p["out"]["bias"]
    np.testing.assert_allclose(out, expected, atol=1e-5)


class SinkKernel(nn.Module):
    """A toy kernel using the attention's own projections: one learned sink vector, projected by the layer's key and
    value projections, is an extra key/value every query sees."""

    cfg: object
    causal: bool = False
    projections: object = None

    Shared = None

    @nn.compact
    def __call__(self, query, key, value, inputs, carry=None, deterministic: bool = True):
        sink = self.param("sink", nn.initializers.normal(1.0), (1, 1, self.cfg.hidden_size))
        sink = jnp.broadcast_to(sink, (query.shape[0], 1, sink.shape[-1]))
        key = jnp.concatenate([self.projections.key(sink), key], 1)
        value = jnp.concatenate([self.projections.value(sink), value], 1)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query / jnp.sqrt(query.shape[-1]), key)
        logits = logits + jnp.pad(inputs.bias, [(0, 0)] * 3 + [(1, 0)])
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), value), carry


def test_a_kernel_declaring_projections_gets_the_attentions_own(monkeypatch):
    monkeypatch.setitem(ATTENTION_KERNELS, "sink", SinkKernel)
    cfg = bert(**SMALL, attention_kind="sink").model
    x = jax.random.normal(jax.random.key(1), (2, 5, 32))
    mask_bias = jnp.zeros((2, 1, 5, 5)).at[1, :, :, 4].set(-1e9)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    inputs = AttentionInputs(mask_bias, positions, positions[:1])
    attention = Attention(cfg)
    variables = init(attention, x, x, inputs)
    assert sorted(variables["params"]) == ["kernel", "key", "out", "query", "value"]
    assert list(variables["params"]["kernel"]) == ["sink"]  # no projection of its own: the layer's are reused
    out, _ = attention.apply(variables, x, x, inputs)
    p = jax.tree.map(np.asarray, variables["params"])
    proj = lambda name, v: np.einsum("ble,ehd->blhd", v, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    xn, sink = np.asarray(x), np.broadcast_to(p["kernel"]["sink"], (2, 1, 32))
    q = proj("query", xn)
    k = np.concatenate([proj("key", sink), proj("key", xn)], axis=1)
    v = np.concatenate([proj("value", sink), proj("value", xn)], axis=1)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
    logits[1, :, :, 1 + 4] = -1e9
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bqhd,hde->bqe", np.einsum("bhqk,bkhd->bqhd", weights, v), p["out"]["kernel"])
    np.testing.assert_allclose(out, expected + p["out"]["bias"], atol=1e-5)


def test_prefix_lm_mask_is_bidirectional_inside_the_prefix_only():
    cfg = gpt(**SMALL).model
    model = DecoderLM(cfg)
    variables = init(model, IDS)
    prefix = jnp.array([4, 4])

    def first_logits(ids, prefix_length):
        return model.apply(variables, ids, prefix_length=prefix_length)[:, 0]

    inside, outside = IDS.at[:, 2].set(7), IDS.at[:, 6].set(7)
    assert np.abs(first_logits(inside, prefix) - first_logits(IDS, prefix)).max() > 1e-4
    np.testing.assert_allclose(first_logits(outside, prefix), first_logits(IDS, prefix), atol=1e-6)
    np.testing.assert_allclose(first_logits(inside, None), first_logits(IDS, None), atol=1e-6)


class LearnedSlope(nn.Module):
    """A learned activation module: leaky ReLU with a trainable slope."""

    @nn.compact
    def __call__(self, x):
        return jnp.where(x > 0, x, self.param("slope", nn.initializers.constant(0.25), ()) * x)


def test_activation_may_be_a_learned_module(monkeypatch):
    monkeypatch.setitem(activations.ACTIVATIONS, "learned_slope", LearnedSlope)
    _, variables = encode(bert(**SMALL, activation="learned_slope").model)
    assert variables["params"]["encoder"]["stack"]["layers_1"]["mlp"]["activation"]["slope"] == 0.25


def test_bfloat16_compute_keeps_float32_parameters_and_close_outputs():
    out32, variables = encode(bert(**SMALL).model)
    out16, _ = encode(bert(**SMALL, dtype="bfloat16").model, variables)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), out32, atol=0.1)


@pytest.mark.parametrize("field,kind", [("attention_kind", "linear"), ("ffn_kind", "no_such_ffn"),
                                        ("residual_adapter", "missing"), ("activation", "swishy")])
def test_unknown_kinds_are_clear_errors(field, kind):
    with pytest.raises(ValueError, match=f"unknown .*{kind!r}; known"):
        encode(bert(**SMALL, **{field: kind}).model)


@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_remat_policies_leave_loss_and_gradients_unchanged(remat):
    def loss_and_grads(cfg):
        model = EncoderForPretraining(cfg)
        variables = init(model, IDS)
        loss = lambda p: model.apply({"params": p}, IDS)["mlm_logits"].std()  # noqa: E731
        return jax.value_and_grad(loss)(variables["params"])

    plain_loss, plain_grads = loss_and_grads(bert(**SMALL).model)
    remat_loss, remat_grads = loss_and_grads(bert(**SMALL, remat=remat).model)
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads)):
        np.testing.assert_allclose(a, b, atol=1e-6)
