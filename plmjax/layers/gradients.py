"""Helpers that change how XLA schedules work, never what it computes.

Both rest on one fact about XLA:CPU: it fuses cheap elementwise producers into every consumer, recomputing
them, and `lax.optimization_barrier` is dropped before fusion; a reduction, though, is not fused into its
consumers. A sum of [x, 0] is exact, so it stores x once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_jvp
def materialize_gradient(x):
    """Identity whose cotangent XLA must store once instead of recomputing it in every consumer.

    In a pre-norm stack the gradient of the residual stream is a chain of elementwise adds through all
    later layers; XLA:CPU fuses that chain into each consumer (two matmul operands and the next add),
    so layer l recomputes the work of every layer above it: quadratic in depth, a quarter of a GPT-2
    small train step. The tangent map below transposes to `stored_once` of the cotangent.
    """
    return x


def stored_once(*xs):
    """xs, each computed once into memory by one reduction (a sum with zeros): its consumers read it."""
    padded = [lax.pad(x[None], jnp.zeros((), x.dtype), ((0, 1, 0),) + ((0, 0, 0),) * x.ndim) for x in xs]
    zeros = [jnp.zeros((), x.dtype) for x in xs]
    return lax.reduce(padded, zeros, lambda a, b: [x + y for x, y in zip(a, b)], (0,))


@materialize_gradient.defjvp
def _jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    # broadcast -> slice is the identity; its transpose is pad with zeros -> reduce_sum.
    doubled = lax.broadcast_in_dim(tangent, (2, *tangent.shape), tuple(range(1, tangent.ndim + 1)))
    return x, lax.squeeze(lax.slice_in_dim(doubled, 0, 1, axis=0), (0,))
