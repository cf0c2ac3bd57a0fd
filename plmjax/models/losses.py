"""Weighted token cross-entropy and accuracy in float32."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def top_prediction_is(logits, targets):
    """argmax(logits, -1) == targets (a tie goes to the first index), as one pass that compares every logit
    with the target's: XLA:CPU's (value, index) argmax reduction was 2% of a GPT-2 small train step."""
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)
    before_target = jnp.arange(logits.shape[-1]) < targets[..., None]
    beaten = (logits > target_logit) | ((logits == target_logit) & before_target)
    return ~jnp.any(beaten, axis=-1)


def weighted_cross_entropy(logits, targets, weights):
    """Mean cross-entropy and accuracy over positions with weight > 0 (sums are guarded against 0)."""
    weights = weights.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    total = jnp.maximum(weights.sum(), 1e-8)
    correct = top_prediction_is(logits, targets).astype(jnp.float32)
    return (losses * weights).sum() / total, (correct * weights).sum() / total
