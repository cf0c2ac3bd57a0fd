"""Token cross-entropy and accuracy against numpy, argmax's tie rule included."""

import jax.numpy as jnp
import numpy as np
import scipy.special

from plmjax.models.losses import top_prediction_is, weighted_cross_entropy


def test_top_prediction_is_argmax_with_ties_going_to_the_first_index():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (64, 9, 7)).astype(np.float32)  # small integers: ties everywhere
    targets = rng.integers(0, 7, (64, 9))
    targets[:, :3] = logits[:, :3].argmax(-1)
    expected = logits.argmax(-1) == targets
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(top_prediction_is(jnp.asarray(logits), jnp.asarray(targets)), expected)


def test_weighted_cross_entropy_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (4, 6))
    weights = (rng.random((4, 6)) < 0.7).astype(np.float32)
    loss, accuracy = weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    nll = -np.take_along_axis(scipy.special.log_softmax(logits, -1), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, (nll * weights).sum() / weights.sum(), rtol=1e-6)
    np.testing.assert_allclose(accuracy, ((logits.argmax(-1) == targets) * weights).sum() / weights.sum(), rtol=1e-6)
