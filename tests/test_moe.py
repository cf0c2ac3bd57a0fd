"""Mixture-of-experts FFN: expert parallelism equals one device, capacity and routing do what they say,
router losses have their analytic values, and the presets shard as intended without materialising weights."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from test_sharding import assert_trees_close, causal_batch

from plmjax import partitioning
from plmjax.config import ConfigError, MeshConfig, bert, gpt, load_config, t5
from plmjax.layers import moe, routing
from plmjax.models.task import make_model_task
from plmjax.training import state as state_lib
from plmjax.training.optimizer import make_optimizer

SMALL = dict(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, head_dim=8, mlp_dim=64, max_length=32,
             dropout_rate=0.0, attention_dropout_rate=0.0)
MOE = dict(ffn_kind="moe", num_experts=4, moe_every=2)


def moe_layer(cfg, x, train=False, router_kernel=None):
    """(output, sown statistics) of one MoE FFN, optionally with a given router kernel [embed, experts]."""
    layer = moe.MoeFeedForward(cfg)
    params = nn.meta.unbox(jax.jit(layer.init)(jax.random.key(0), x)["params"])
    if router_kernel is not None:
        params["router"]["kernel"] = jnp.asarray(router_kernel, jnp.float32)
    apply = jax.jit(lambda p, x: layer.apply({"params": p}, x, deterministic=not train, mutable=[moe.COLLECTION]))
    y, state = apply(params, x)
    return y, {name: values[0] for name, values in state[moe.COLLECTION].items()}


def run_step(task, params, batch, mesh):
    """(loss, metrics, grads, routings) of one training forward/backward on `mesh`, the params placed
    there, and the compiled HLO."""
    boxed = jax.eval_shape(task.init, jax.random.key(0), batch)["params"]
    params = jax.device_put(params, partitioning.logical_shardings(boxed, mesh))
    is_router = lambda module, _: isinstance(module, routing.Router)  # noqa: E731

    def step(params, batch):
        rng = jax.random.key(1)
        loss_fn = lambda p: task.loss(p, batch, rng, train=True)  # noqa: E731
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        _, captured = task.module.apply({"params": params}, **task.model_inputs(batch), deterministic=False,
                                        rngs={"dropout": rng}, capture_intermediates=is_router,
                                        mutable=["intermediates"])
        return loss, metrics, grads, captured["intermediates"]

    with jax.set_mesh(mesh), partitioning.axis_rules():
        batch = {k: jax.device_put(v, partitioning.batch_sharding(mesh)) for k, v in batch.items()}
        compiled = jax.jit(step).lower(params, batch).compile()
        out = compiled(params, batch)
    return jax.device_get(out), params, compiled.as_text()


def test_expert_parallel_equals_one_device():
    """expert=4 x data=2 on 8 devices: same loss, router decisions, statistics and gradients as 1 device."""
    config = gpt(**SMALL, **MOE, router_top_k=2, train_capacity_factor=1.0, router_jitter=0.1)
    batch = causal_batch(np.random.default_rng(0))
    task = make_model_task(config)
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])
    single = partitioning.make_mesh(MeshConfig(data=1), jax.devices()[:1])
    sharded = partitioning.make_mesh(MeshConfig(data=2, expert=4))
    (loss_1, metrics_1, grads_1, routes_1), _, _ = run_step(task, params, batch, single)
    (loss_n, metrics_n, grads_n, routes_n), params_n, hlo = run_step(task, params, batch, sharded)
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    assert metrics_1["moe_dropped_tokens"] > 0  # capacity 1.0 with top-2 really drops tokens
    for key in metrics_1:
        np.testing.assert_allclose(metrics_n[key], metrics_1[key], rtol=1e-5, atol=1e-7, err_msg=key)
    route_1, route_n = (r["stack"]["layers_1"]["mlp"]["router"]["__call__"][0] for r in (routes_1, routes_n))
    np.testing.assert_array_equal(route_n.dispatch, route_1.dispatch)
    np.testing.assert_allclose(route_n.combine, route_1.combine, rtol=1e-5, atol=1e-7)
    assert_trees_close(grads_n, grads_1, rtol=1e-5)
    # Each device holds one expert's weights, and tokens travel to them by all-to-all.
    kernel = params_n["stack"]["layers_1"]["mlp"]["experts"]["wi"]["kernel"]
    assert kernel.sharding.spec == P("expert", None, "model")
    assert kernel.addressable_shards[0].data.shape == (1, SMALL["hidden_size"], SMALL["mlp_dim"])
    assert re.search(r"\ball-to-all\b", hlo)


def test_capacity_drops_exactly_the_overflow_in_token_order():
    """Capacity factor 1.0: 16 tokens / 4 experts = 4 slots; later requests beyond 4 are dropped."""
    cfg = gpt(**SMALL, **MOE, train_capacity_factor=1.0, eval_capacity_factor=2.0).model
    preferred = np.array([[0, 1, 0, 2, 0, 0, 3, 0, 1, 0, 0, 2, 0, 1, 0, 0], [3] * 16])  # 10+3+2+1 and 16
    x = 4.0 * jax.nn.one_hot(preferred, SMALL["hidden_size"])
    skewed = np.eye(SMALL["hidden_size"], 4)  # router logit of expert e = 4 * [token prefers e]
    y, stats = moe_layer(cfg, x, train=True, router_kernel=skewed)
    assert float(stats["dropped_tokens"]) == (10 - 4) + (16 - 4)
    assert float(stats["dropped_fraction"]) == 18 / 32
    kept = np.abs(np.asarray(y)).sum(-1) > 0
    expected = np.zeros_like(kept)
    for g, row in enumerate(preferred):
        seen = {}
        for t, e in enumerate(row):
            seen[e] = seen.get(e, 0) + 1
            expected[g, t] = seen[e] <= 4
    np.testing.assert_array_equal(kept, expected)
    _, stats = moe_layer(cfg, x, train=False, router_kernel=skewed)  # eval: factor 2.0, 8 slots
    assert float(stats["dropped_tokens"]) == (10 - 8) + (16 - 8)


@pytest.mark.parametrize("top_k", [1, 2])
def test_router_losses_of_a_uniform_router_are_analytic(top_k):
    """All logits 0: load-balancing loss = E * sum_e f_e / E = top_k; z-loss = log(E)^2."""
    cfg = gpt(**SMALL, **MOE, router_top_k=top_k).model
    x = jax.random.normal(jax.random.key(0), (2, 16, SMALL["hidden_size"]))
    _, stats = moe_layer(cfg, x, router_kernel=np.zeros((SMALL["hidden_size"], 4)))
    np.testing.assert_allclose(stats["aux_loss"], top_k, rtol=1e-6)
    np.testing.assert_allclose(stats["z_loss"], math.log(4) ** 2, rtol=1e-6)


def test_load_balancing_loss_matches_its_definition():
    """E * sum_e (share of tokens choosing e) * (mean probability of e), averaged over groups."""
    probs = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, 10, 5))))
    route = routing.tokens_choose(jnp.asarray(probs), top_k=2, capacity=10)
    top2 = np.argsort(-probs, axis=-1)[..., :2]
    chosen = (top2[..., :, None] == np.arange(5)).any(axis=-2)
    expected = np.mean([5 * np.sum(chosen[g].mean(0) * probs[g].mean(0)) for g in range(3)])
    np.testing.assert_allclose(route.aux_loss, expected, rtol=1e-6)
    np.testing.assert_allclose(route.expert_load, chosen.sum((0, 1)) / (3 * 10 * 2), rtol=1e-6)
    gates = np.where(chosen, probs, 0.0)
    np.testing.assert_allclose(route.combine.sum(-1), gates / gates.sum(-1, keepdims=True), rtol=1e-6)


def test_expert_choice_fills_every_expert_to_capacity():
    cfg = bert(**SMALL, **MOE, router_kind="experts_choose", eval_capacity_factor=0.5).model
    x = jax.random.normal(jax.random.key(0), (2, 16, SMALL["hidden_size"]))
    router = routing.Router(cfg)
    params = router.init(jax.random.key(1), x, 2)
    route = router.apply(params, x, routing.expert_capacity(cfg, 16, train=False))
    dispatch = np.asarray(route.dispatch)  # [G, T, E, C] with C = ceil(0.5 * 16 / 4) = 2
    assert dispatch.shape == (2, 16, 4, 2)
    np.testing.assert_array_equal(dispatch.sum(axis=(1, 3)), 2)  # every expert takes exactly its capacity
    np.testing.assert_array_equal(dispatch.sum(axis=1), 1)  # one token per slot
    np.testing.assert_array_equal(route.expert_load, 0.25)
    _, stats = moe_layer(cfg, x)
    assert float(stats["aux_loss"]) == 0.0
    assert float(stats["dropped_tokens"]) >= 32 - 4 * 2 * 2  # 16 slots for 32 tokens


def test_moe_lm_stays_causal_when_tokens_are_dropped():
    """Slots fill in token order, so later tokens cannot evict earlier ones: logits before t ignore t."""
    config = gpt(**SMALL, **MOE, router_top_k=2, eval_capacity_factor=0.5)
    task = make_model_task(config)
    batch = causal_batch(np.random.default_rng(0))
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])
    changed = dict(batch, input_ids=batch["input_ids"].copy())
    changed["input_ids"][:, 10:] = np.random.default_rng(1).integers(1, 96, (8, 6))
    forward = jax.jit(lambda b: task.forward({"params": params}, b, True))
    (logits, sown), (logits_changed, _) = forward(batch), forward(changed)
    stats = sown["moe"]
    assert float(stats["stack"]["layers_1"]["mlp"]["dropped_tokens"][0]) > 0
    np.testing.assert_allclose(logits_changed[:, :10], logits[:, :10], atol=1e-6)


def test_scanned_moe_stack_equals_the_unrolled_one():
    config = gpt(**SMALL, ffn_kind="moe", num_experts=4, train_capacity_factor=1.0)
    scanned = gpt(**SMALL, ffn_kind="moe", num_experts=4, train_capacity_factor=1.0, scan_layers=True)
    batch = causal_batch(np.random.default_rng(0))
    task, scanned_task = make_model_task(config), make_model_task(scanned)
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])
    layers = [params["stack"].pop(f"layers_{i}") for i in range(2)]
    stacked = dict(params, stack=dict(params["stack"], layers=jax.tree.map(lambda *xs: jnp.stack(xs), *layers)))
    params["stack"].update({f"layers_{i}": layer for i, layer in enumerate(layers)})
    _, metrics = jax.jit(lambda p: task.loss(p, batch, jax.random.key(1), train=True))(params)
    _, scanned_metrics = jax.jit(lambda p: scanned_task.loss(p, batch, jax.random.key(1), train=True))(stacked)
    assert set(scanned_metrics) == set(metrics)
    for key in metrics:
        np.testing.assert_allclose(scanned_metrics[key], metrics[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_switch_t5_routes_in_both_stacks_and_adds_router_losses_to_the_loss():
    config = t5(v1_1=True, **SMALL, **MOE, router_z_loss_coef=0.01)
    task = make_model_task(config)
    rng = np.random.default_rng(0)
    batch = {"encoder_input_ids": rng.integers(1, 96, (2, 16)).astype(np.int32),
             "decoder_input_ids": rng.integers(1, 96, (2, 6)).astype(np.int32),
             "decoder_target_ids": rng.integers(1, 96, (2, 6)).astype(np.int32),
             "decoder_weights": np.ones((2, 6), np.float32)}
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])
    assert {"wi_0", "wi_1", "wo"} == set(params["encoder"]["layers_0"]["mlp"])  # layer 0 dense, gated
    assert params["decoder"]["layers_1"]["mlp"]["experts"]["wi_0"]["kernel"].shape == (4, 32, 64)
    stats, metrics = jax.jit(lambda p: (task.forward({"params": p}, batch, True)[1]["moe"], task.loss(p, batch)[1]))(params)
    assert set(stats) == {"encoder", "decoder"}
    aux = np.mean([stats[s]["layers_1"]["mlp"]["aux_loss"][0] for s in ("encoder", "decoder")])
    z = np.mean([stats[s]["layers_1"]["mlp"]["z_loss"][0] for s in ("encoder", "decoder")])
    np.testing.assert_allclose(metrics["moe_aux_loss"], aux, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], metrics["objective_loss"] + 0.01 * aux + 0.01 * z, rtol=1e-6)
    np.testing.assert_allclose(sum(metrics[f"moe_load_expert_{e}"] for e in range(4)), 1.0, rtol=1e-6)


def test_inconsistent_moe_settings_are_config_errors():
    with pytest.raises(ConfigError, match="experts_choose"):
        gpt(**SMALL, **MOE, router_kind="experts_choose")
    with pytest.raises(ConfigError, match="scan_layers"):
        gpt(**SMALL, **MOE, scan_layers=True)
    with pytest.raises(ConfigError, match="router_top_k"):
        gpt(**SMALL, **MOE, router_top_k=5)
    config = gpt(**SMALL, ffn_kind="moe", num_experts=6)
    task = make_model_task(config)
    with jax.set_mesh(partitioning.make_mesh(MeshConfig(data=2, expert=4))), partitioning.axis_rules():
        with pytest.raises(ConfigError, match="num_experts=6 does not split over mesh.expert=4"):
            jax.eval_shape(task.init, jax.random.key(0), causal_batch(np.random.default_rng(0)))


def abstract_state(config, mesh_shape, batch):
    """The train state's ShapeDtypeStructs with their shardings on a fake mesh of any size."""
    mesh = AbstractMesh(mesh_shape, partitioning.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    task = make_model_task(config)
    return state_lib.state_shardings(task, make_optimizer(config.optimizer, 10), mesh, batch)[0]


def per_device_bytes(tree) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_seed_1_1t_preset_puts_one_expert_per_device():
    """Artetxe et al.'s 1.1T layout on a (data 2, expert 512) mesh, checked without a single weight."""
    config = load_config("configs/moe_lm_1_1t.py")
    L, D, F, E, V, S = 32, 4096, 16384, 512, 51200, 2048
    ids = np.zeros((1, S), np.int32)
    state = abstract_state(config, (2, 512, 1), {"input_ids": ids, "target_ids": ids, "weights": ids})
    ffn = 2 * D * F + F + D  # one FFN's kernels and biases
    shared = V * D + S * D + L * (4 * D * D + 4 * D + 4 * D) + 2 * D + (L // 2) * (ffn + D * E)
    experts = (L // 2) * E * ffn
    total = sum(x.size for x in jax.tree.leaves(state.params))
    assert total == shared + experts
    assert 1.09e12 < total < 1.12e12
    kernel = state.params["stack"]["layers_1"]["mlp"]["experts"]["wo"]["kernel"]
    assert kernel.sharding.spec == P("expert", "model", None)
    assert kernel.sharding.shard_shape(kernel.shape) == (1, F, D)
    assert per_device_bytes(state.params) == 4 * (shared + experts // E)  # ~26.8 GB of fp32 weights
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
    assert per_device_bytes(moments) == 2 * 4 * (shared + experts // E)  # Adam's mu and nu, sharded alike


def test_switch_base_64_preset_splits_experts_over_expert_and_model_axes():
    config = load_config("configs/moe_t5_base_64e.py")
    enc, dec = np.zeros((1, 512), np.int32), np.zeros((1, 114), np.int32)
    state = abstract_state(config, (4, 64, 2), {"encoder_input_ids": enc, "decoder_input_ids": dec,
                                                "decoder_target_ids": dec, "decoder_weights": dec})
    expert_leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(state.params)
                     if "experts" in jax.tree_util.keystr(path)]
    assert len(expert_leaves) == 12 * 2  # 6 MoE layers per stack, wi and wo (no biases in T5)
    assert all(x.sharding.shard_shape(x.shape)[0] == 1 for x in expert_leaves)
    assert all(math.prod(x.sharding.shard_shape(x.shape)) == 768 * 3072 // 2 for x in expert_leaves)
    total = sum(x.size for x in jax.tree.leaves(state.params))
    assert 3.7e9 < total < 3.9e9  # Switch-Base-64: 3.8B parameters


def active_params_per_token(config) -> float:
    """Parameters a token passes through: all but the experts, plus top_k of every MoE layer's E experts."""
    task = make_model_task(config)
    ids = np.zeros((1, 8), np.int32)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(task.init(jax.random.key(0), {"input_ids": ids})["params"]))
    total = 0.0
    for path, x in jax.tree_util.tree_leaves_with_path(shapes):
        name = jax.tree_util.keystr(path)
        share = config.model.router_top_k / config.model.num_experts if "experts" in name else 1.0
        total += 0 if "router" in name else x.size * share
    return total


def test_tiny_dense_and_moe_twins_are_flop_matched():
    dense, sparse = load_config("configs/dense_lm_tiny.py"), load_config("configs/moe_lm_tiny.py")
    assert active_params_per_token(sparse) == active_params_per_token(dense)
    assert dense.data == sparse.data and dense.optimizer == sparse.optimizer
