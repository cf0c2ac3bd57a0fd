"""SiFT (plmjax/objectives/sift.py): DeBERTa's adversarial term on the normalised embeddings, as a regularizer.

Each test checks what a user relies on: weight 0 is plain fine-tuning bit for bit, the perturbation has the
asked-for size, its construction sends no gradient, the divergence is the reference's formula, a run with
the term still learns, and bad settings are refused by name.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plmjax.config import ConfigError, apply_overrides, bert
from plmjax.models.finetuning import ClassificationTask, RegressionTask
from plmjax.models.task import RegularizedTask, make_model_task
from plmjax.objectives import sift
from plmjax.objectives.registry import REGULARIZERS

TINY = dict(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_length=16)
BATCH, LENGTH = 8, 12


def make_batch(rng: np.random.Generator, size: int = BATCH):
    """Rows of random tokens (some padded) labelled by whether token 5 appears."""
    ids = rng.integers(6, 64, (size, LENGTH))
    ids[:, 0] = 2  # a [CLS]
    present = rng.random(size) < 0.5
    ids[present, rng.integers(1, 8, present.sum())] = 5
    lengths = rng.integers(8, LENGTH + 1, size)
    mask = np.arange(LENGTH)[None] < lengths[:, None]
    ids = np.where(mask, ids, 0)
    return {"input_ids": jnp.asarray(ids, jnp.int32), "segment_ids": jnp.zeros((size, LENGTH), jnp.int32),
            "attention_mask": jnp.asarray(mask), "labels": jnp.asarray((ids == 5).any(1), jnp.int32)}


@pytest.fixture(scope="module")
def setup():
    """A tiny BERT classifier (dropout on), its parameters, a batch and a dropout rng, shared by the tests.

    Initialised 10x wider than BERT's 0.02, so that its outputs already depend on its inputs."""
    inner = ClassificationTask(bert(**TINY, initializer_range=0.2).model)
    batch = make_batch(np.random.default_rng(0))
    return inner, init_params(inner, batch), batch, jax.random.key(1)


def init_params(task, batch):
    return jax.jit(lambda rng: nn.meta.unbox(task.init(rng, batch))["params"])(jax.random.key(0))


@pytest.fixture(scope="module")
def inner_step(setup):
    """The classifier's training loss and gradients at the shared batch and rng (dropout on)."""
    inner, params, batch, rng = setup
    return jax.jit(jax.value_and_grad(lambda p: inner.loss(p, batch, rng, train=True)[0]))(params)


def wrapped(inner, **options):
    return sift.SiftTask(inner, sift.SiftOptions(**options))


def test_sift_is_a_registered_regularizer_with_typed_keys():
    config = apply_overrides(bert(**TINY), ["objective.regularizers=sift", "objective.sift.weight=5",
                                            "objective.sift.steps=2", "objective.sift.epsilon=0.5"])
    assert REGULARIZERS["sift"].options is sift.SiftOptions
    assert config.objective.sift == sift.SiftOptions(weight=5.0, steps=2, epsilon=0.5)
    task = make_model_task(config)  # MLM pretraining, wrapped
    assert isinstance(task, sift.SiftTask) and task.options.weight == 5.0 and task.token_keys == task.inner.token_keys


def test_weight_zero_is_plain_fine_tuning_bit_for_bit(setup, inner_step):
    inner, params, batch, rng = setup
    task = wrapped(inner, weight=0.0, step_size=0.5, steps=2)

    loss, grads = inner_step
    sift_loss, sift_grads = jax.jit(jax.value_and_grad(lambda p: task.loss(p, batch, rng, train=True)[0]))(params)
    np.testing.assert_array_equal(sift_loss, loss)
    leaves, sift_leaves = jax.tree.leaves(grads), jax.tree.leaves(sift_grads)
    assert len(leaves) == len(sift_leaves) > 10 and all(np.any(leaf != 0) for leaf in leaves)
    for leaf, sift_leaf in zip(leaves, sift_leaves):
        np.testing.assert_array_equal(sift_leaf, leaf)


def test_ascent_step_is_the_references_and_projection_fixes_each_tokens_norm():
    rng = np.random.default_rng(0)
    delta, grad = rng.normal(size=(2, 3, 8)).astype(np.float32), rng.normal(size=(2, 3, 8)).astype(np.float32)
    expected = delta + 1e-2 * grad / (1e-6 + np.abs(grad).max(-1, keepdims=True))
    np.testing.assert_allclose(sift.ascent_step(delta, grad, 1e-2), expected, rtol=1e-6)
    projected = np.asarray(sift.ascent_step(delta, grad, 1e-2, epsilon=0.3))
    np.testing.assert_allclose(np.linalg.norm(projected, axis=-1), 0.3, rtol=1e-5)
    np.testing.assert_allclose(projected / 0.3, expected / np.linalg.norm(expected, axis=-1, keepdims=True),
                               rtol=1e-5, atol=1e-7)  # the direction is the step's
    bad = grad.copy()
    bad[1, 2, 3] = np.nan
    np.testing.assert_array_equal(sift.ascent_step(delta, bad, 1e-2, epsilon=0.3), delta)  # skipped, as the reference


def test_the_perturbations_construction_sends_no_gradient(setup, inner_step):
    inner, params, batch, rng = setup
    # A large step and init, so that a delta that depended on the parameters would change their gradient.
    weight = 1.0
    task = wrapped(inner, weight=weight, step_size=0.5, init=0.1, steps=2, epsilon=1.0)

    @jax.jit
    def run(params):
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: task.loss(p, batch, rng, train=True), has_aux=True)(params)

        def with_constant_delta(p):  # task.loss, with the final delta made a constant here
            outputs, sown, shapes = task.clean_pass(p, batch, rng)
            deltas = jax.lax.stop_gradient(task.perturbation(p, batch, rng, outputs, shapes))
            return task.loss_given(p, batch, rng, outputs, sown, deltas)[0], (deltas, shapes)

        (constant_loss, (deltas, shapes)), constant_grads = jax.value_and_grad(
            with_constant_delta, has_aux=True)(params)
        return loss, metrics, grads, constant_loss, constant_grads, deltas, shapes

    loss, metrics, grads, constant_loss, constant_grads, deltas, shapes = run(params)
    inner_loss, inner_grads = inner_step
    np.testing.assert_allclose(constant_loss, loss, rtol=1e-6)
    assert metrics["sift_loss"] > 0
    np.testing.assert_allclose(metrics["loss"], inner_loss + weight * metrics["sift_loss"], rtol=1e-6)
    norm = lambda tree: np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree)))  # noqa: E731
    assert norm(jax.tree.map(np.subtract, grads, constant_grads)) < 1e-5 * norm(grads)
    assert norm(jax.tree.map(np.subtract, grads, inner_grads)) > 0.2 * norm(inner_grads)  # the term counts
    # one delta per embedding-norm call, of its input's shape, each token's vector of norm epsilon
    assert [d.shape for d in deltas] == [(BATCH, LENGTH, TINY["hidden_size"])] == list(map(tuple, shapes))
    np.testing.assert_allclose(np.linalg.norm(deltas[0], axis=-1), 1.0, rtol=1e-5)


def test_the_ascent_raises_the_divergence(setup):
    inner, params, batch, _ = setup
    task = wrapped(inner, weight=1.0)
    dropout = jax.random.key(7)  # the same dropout masks in every pass here

    @jax.jit
    def run(params):
        clean, _, shapes = task.clean_pass(params, batch, dropout)
        start = sift.initial_delta(jax.random.key(3), shapes[0], 0.01)

        def objective(delta):
            return sift.divergence(task.perturbed_outputs(params, batch, dropout, (delta,)), clean, jnp.sum)

        value, grad = jax.value_and_grad(objective)(start)
        return value, objective(sift.ascent_step(start, grad, 0.1)), objective(sift.ascent_step(start, -grad, 0.1))

    start, up, down = run(params)
    assert up > start + 1e-4 and down < start - 1e-4, (start, up, down)  # the step climbs the divergence


def test_symmetric_kl_is_the_references_formula():
    rng = np.random.default_rng(0)
    logits, target = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))

    def log_softmax(x):
        x = x.reshape(-1, x.shape[-1])
        return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)

    ls, lt = log_softmax(logits), log_softmax(target)
    expected = (np.exp(lt) * -ls).sum(-1) + (np.exp(ls) * -lt).sum(-1)
    np.testing.assert_allclose(sift.symmetric_kl(jnp.asarray(logits), jnp.asarray(target)), expected, rtol=1e-5)
    # Identical logits: the value is the reference's (twice the entropy: two cross-entropies, not a KL), and
    # nothing pushes either side, so the term's gradient vanishes.
    same = np.asarray(sift.symmetric_kl(jnp.asarray(logits), jnp.asarray(logits)))
    np.testing.assert_allclose(same, 2 * (np.exp(ls) * -ls).sum(-1), rtol=1e-5)
    both = jax.grad(lambda a, b: sift.symmetric_kl(a, b).sum(), argnums=(0, 1))
    grads = both(jnp.asarray(logits), jnp.asarray(logits))
    for g in grads:
        np.testing.assert_allclose(g, 0.0, atol=1e-6)
    moved = jax.grad(lambda a: sift.symmetric_kl(a, jnp.asarray(target)).sum())(jnp.asarray(logits))
    np.testing.assert_allclose(moved.reshape(-1, 5), np.exp(ls) - np.exp(lt), rtol=1e-5, atol=1e-7)  # KL's gradient


def test_the_divergence_compares_logits_and_uses_squared_error_for_one_value():
    rng = np.random.default_rng(1)
    a, b = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 3)))
    outputs = {"mlm_logits": a, "nsp_logits": a[:, :2], "hidden": jnp.zeros((4, 7))}
    target = {"mlm_logits": b, "nsp_logits": b[:, :2], "hidden": jnp.ones((4, 7))}
    expected = sift.symmetric_kl(a, b).mean() + sift.symmetric_kl(a[:, :2], b[:, :2]).mean()
    np.testing.assert_allclose(sift.divergence(outputs, target), expected, rtol=1e-6)  # "hidden" skipped
    predictions, labels = a[:, 0], b[:, 0]  # regression: one value per example
    np.testing.assert_allclose(sift.divergence(predictions, labels), np.mean((a[:, 0] - b[:, 0]) ** 2), rtol=1e-6)
    np.testing.assert_allclose(sift.divergence(a[:, :1], b[:, :1], jnp.sum), np.sum((a[:, 0] - b[:, 0]) ** 2),
                               rtol=1e-6)
    two = lambda z: jnp.stack([jnp.zeros_like(z), z], -1)  # noqa: E731  one sigmoid logit per token: 2 classes
    np.testing.assert_allclose(sift.divergence({"detection_logits": a}, {"detection_logits": b}),
                               sift.symmetric_kl(two(a), two(b)).mean(), rtol=1e-6)


def test_regression_gets_a_squared_error_term(setup):
    _, params, batch, rng = setup
    inner = RegressionTask(bert(**TINY, num_labels=1, initializer_range=0.2).model)  # predictions [batch]
    batch = dict(batch, labels=batch["labels"].astype(jnp.float32))
    head = params["classifier"]  # the classifier's first output as the regression head
    params = dict(params, classifier={"kernel": head["kernel"][:, :1], "bias": head["bias"][:1]})
    loss, metrics = jax.jit(lambda p: wrapped(inner, weight=1.0, step_size=0.1).loss(p, batch, rng, True))(params)
    assert np.isfinite(loss) and metrics["sift_loss"] > 0


def test_a_run_with_sift_trains(setup):
    inner, params, _, _ = setup
    task = wrapped(inner, weight=1.0)  # the reference's step_size and init
    data = make_batch(np.random.default_rng(1), 64)  # 4 batches of 16, in turn
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, index):
        rows = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, (index % 4) * 16, 16), data)
        (_, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, rows, jax.random.key(index), True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = dict(metrics, eval_loss=task.loss(params, data)[0])  # all 64 rows, no dropout, before the update
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state, history = optimizer.init(params), []
    for index in range(60):
        params, opt_state, metrics = step(params, opt_state, index)
        history.append(jax.device_get(metrics))
    terms = np.array([m["sift_loss"] for m in history])
    assert np.all(np.isfinite(terms)) and np.all(terms > 0)
    classification = [m["loss"] - m["sift_loss"] for m in history]  # the inner loss of each training step
    assert np.mean(classification[-8:]) < 0.6 * np.mean(classification[:8]), classification
    assert history[-1]["eval_loss"] < 0.5 * history[0]["eval_loss"], (history[0]["eval_loss"], history[-1]["eval_loss"])


@pytest.mark.parametrize("key,value", [("weight", "-1"), ("step_size", "0"), ("init", "-0.1"), ("steps", "0"),
                                       ("epsilon", "-1")])
def test_bad_options_are_refused_by_key(key, value):
    with pytest.raises(ConfigError, match=rf"objective\.sift\.{key}={value}"):
        apply_overrides(bert(**TINY), [f"objective.sift.{key}={value}"])


def test_a_model_without_an_embedding_norm_is_a_clear_error(setup):
    _, params, batch, rng = setup
    config = apply_overrides(bert(**TINY), ["objective.regularizers=sift", "objective.sift.weight=1",
                                            "model.embedding_norm=false"])
    with pytest.raises(ConfigError, match="SiFT perturbs the input of the embedding LayerNorm.*embedding_norm=false"):
        make_model_task(config)

    class Bag(nn.Module):  # a plug-in network with no InputEmbedder: found out when the loss is traced
        @nn.compact
        def __call__(self, input_ids, deterministic=True, **unused):
            return nn.Dense(2)(nn.Embed(64, 8)(input_ids).mean(1))

    class BagTask(ClassificationTask):
        def make_module(self, cfg):
            return Bag()

    bag = BagTask(bert(**TINY).model)
    bag_params = bag.init(jax.random.key(0), batch)["params"]
    with pytest.raises(ConfigError, match="SiFT perturbs the input of the embedding LayerNorm"):
        wrapped(bag, weight=1.0).loss(bag_params, batch, rng, train=True)


def test_sift_wrapped_by_another_regularizer_is_refused_not_dropped(setup):
    inner, params, batch, rng = setup
    outer = RegularizedTask(wrapped(inner, weight=1.0), "other", lambda outputs, sown, batch: 0.0, 1.0)
    with pytest.raises(ConfigError, match="sift must be the last of objective.regularizers"):
        outer.loss(params, batch, rng, train=True)
