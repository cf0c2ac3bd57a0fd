"""Schedules hit their known values, weight decay skips biases and scales, the step clips before the optimizer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plmjax.config import OptimizerConfig
from plmjax.training.optimizer import decay_mask, make_optimizer, make_schedule
from plmjax.training.state import TrainState
from plmjax.training.step import apply_gradients


def lr_at(schedule, step):
    return float(schedule(step))


@pytest.mark.parametrize(
    "kind, expected",  # lr 1.0, warmup 10, 110 steps: values at steps 0, 5, 10, 60, 110
    [
        ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
        ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
        ("inverse_sqrt", [0.0, 0.5, 1.0, (10 / 60) ** 0.5, (10 / 110) ** 0.5]),
        ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ],
)
def test_schedule_values(kind, expected):
    schedule = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10, schedule=kind), 110)
    got = [lr_at(schedule, s) for s in (0, 5, 10, 60, 110)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_schedules_without_warmup():
    cfg = lambda kind: OptimizerConfig(learning_rate=2.0, warmup_steps=0, schedule=kind)  # noqa: E731
    linear = make_schedule(cfg("linear"), 100)
    assert [lr_at(linear, s) for s in (0, 25, 100)] == pytest.approx([2.0, 1.5, 0.0])
    cosine = make_schedule(cfg("cosine"), 100)
    assert [lr_at(cosine, s) for s in (0, 50, 100)] == pytest.approx([2.0, 1.0, 0.0], abs=1e-6)
    rsqrt = make_schedule(cfg("inverse_sqrt"), 100)
    assert [lr_at(rsqrt, s) for s in (0, 1, 4, 100)] == pytest.approx([2.0, 2.0, 1.0, 0.2])
    assert lr_at(make_schedule(cfg("constant"), 100), 77) == pytest.approx(2.0)


def test_run_shorter_than_warmup_still_warms_up():
    schedule = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=100, schedule="cosine"), 20)
    assert lr_at(schedule, 10) == pytest.approx(0.1)


PARAMS = {
    "params": {
        "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
        "norm": {"scale": jnp.ones((2,))},
        "layers": {"kernel": jnp.ones((4, 2, 2)), "bias": jnp.ones((4, 2)), "scale": jnp.ones((4, 2))},
        "embedding": jnp.ones((5, 2)),
    }
}
EXPECTED_MASK = {
    "params": {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False},
        "layers": {"kernel": True, "bias": False, "scale": False},
        "embedding": True,
    }
}


def test_decay_mask_by_name_not_ndim():
    assert decay_mask(PARAMS) == EXPECTED_MASK
    assert decay_mask(PARAMS["params"]) == EXPECTED_MASK["params"]


def test_decay_mask_on_partitioned_boxes():
    boxed = {"dense": {"kernel": nn.Partitioned(jnp.ones((3, 2)), ("embed", "mlp")),
                      "bias": nn.Partitioned(jnp.ones((4, 2)), ("layers", "mlp"))}}
    mask = decay_mask(boxed)
    assert jax.tree.structure(mask) == jax.tree.structure(boxed)
    assert mask["dense"]["kernel"].value is True and mask["dense"]["bias"].value is False


def toy_problem():
    params = {"w": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5, 3.0])}
    grads = {"w": jnp.array([0.3, -0.1]), "bias": jnp.array([-0.2, 0.4])}
    return params, grads


def test_first_adamw_step_by_hand():
    cfg = OptimizerConfig(learning_rate=0.1, schedule="constant", weight_decay=0.5, eps=1e-6, clip_grad_norm=0.0)
    params, grads = toy_problem()
    opt = make_optimizer(cfg, 10)
    updates, _ = opt.update(grads, opt.init(params), params)
    # Step 1, bias-corrected: m_hat = g, v_hat = g^2, so the Adam direction is g / (|g| + eps).
    adam = {k: g / (jnp.abs(g) + 1e-6) for k, g in grads.items()}
    np.testing.assert_allclose(updates["w"], -0.1 * (adam["w"] + 0.5 * params["w"]), rtol=1e-5)
    np.testing.assert_allclose(updates["bias"], -0.1 * adam["bias"], rtol=1e-5)  # no decay on the bias


def test_steps_match_optax_adamw_on_clipped_grads():
    cfg = OptimizerConfig(learning_rate=0.05, schedule="cosine", warmup_steps=2, weight_decay=0.1, clip_grad_norm=1.0)
    params, grads = toy_problem()
    ours = make_optimizer(cfg, 10)
    reference = optax.adamw(make_schedule(cfg, 10), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                            mask={"w": True, "bias": False})
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=ours.init(params))
    p_ref, s_ref = params, reference.init(params)
    for scale in (1.0, 1e4, 1e6, 0.1):  # under the clip threshold, far above it, then under again
        g = jax.tree.map(lambda x: x * scale, grads)
        norm = float(optax.tree.norm(g))
        clipped = jax.tree.map(lambda x: x * min(1.0, 1.0 / norm), g)
        state = apply_gradients(state, g, ours, max_norm=cfg.clip_grad_norm)
        u_ref, s_ref = reference.update(clipped, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u_ref)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(p_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-5)
    p_ours = state.params
    assert float(optax.tree.norm(p_ours)) != pytest.approx(float(optax.tree.norm(params)))


def test_clipping_bounds_what_adam_sees_from_huge_gradients():
    # Adam's step is scale-invariant, so a spike shows in its moments, which it would carry for many steps.
    cfg = OptimizerConfig(learning_rate=0.1, schedule="constant", weight_decay=0.0, clip_grad_norm=1.0)
    params, grads = toy_problem()
    small = jax.tree.map(lambda g: g * 1e-3, grads)  # norm 4.6e-4: left alone
    huge = jax.tree.map(lambda g: g * 1e6, grads)  # norm 4.6e5: rescaled to norm 1

    def moments_after_spike(max_norm):
        opt = make_optimizer(cfg, 10)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params))
        for g in (small, huge):
            state = apply_gradients(state, g, opt, max_norm=max_norm)
        return state.opt_state[0].mu, state.opt_state[0].nu

    mu, nu = moments_after_spike(cfg.clip_grad_norm)
    unit = jax.tree.map(lambda g: g / optax.tree.norm(grads), grads)
    for k in grads:
        np.testing.assert_allclose(mu[k], 0.9 * 0.1 * small[k] + 0.1 * unit[k], rtol=1e-5)
        np.testing.assert_allclose(nu[k], 0.999 * 0.001 * small[k] ** 2 + 0.001 * unit[k] ** 2, rtol=1e-4)
    raw_mu, _ = moments_after_spike(0.0)
    assert float(optax.tree.norm(raw_mu)) > 1e4 > 1.0 > float(optax.tree.norm(mu))
