"""Gradient-path helpers that change how XLA schedules a backward pass, never what it computes."""

from __future__ import annotations

import jax
from jax import lax


@jax.custom_jvp
def materialize_gradient(x):
    """Identity whose cotangent XLA must store once instead of recomputing it in every consumer.

    In a pre-norm stack the gradient of the residual stream is a chain of elementwise adds through all
    later layers; XLA:CPU fuses that chain into each consumer (two matmul operands and the next add),
    so layer l recomputes the work of every layer above it: quadratic in depth, a quarter of a GPT-2
    small train step. `lax.optimization_barrier` is dropped before fusion on CPU, but a reduction is
    not fused into its consumers: the tangent map below transposes to a sum of [cotangent, 0], exact.
    """
    return x


@materialize_gradient.defjvp
def _jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    # broadcast -> slice is the identity; its transpose is pad with zeros -> reduce_sum.
    doubled = lax.broadcast_in_dim(tangent, (2, *tangent.shape), tuple(range(1, tangent.ndim + 1)))
    return x, lax.squeeze(lax.slice_in_dim(doubled, 0, 1, axis=0), (0,))
