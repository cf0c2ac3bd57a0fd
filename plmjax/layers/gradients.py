"""Helpers that change how XLA schedules work, never what it computes.

Both rest on one fact about XLA:CPU: it fuses cheap elementwise producers into every consumer, recomputing
them, and `lax.optimization_barrier` is dropped before fusion; a reduction, though, is not fused into its
consumers. A sum of [x, 0] is exact, so it stores x once. The sum runs on x's bits as unsigned integers:
XLA:CPU hands a float sum to YNNPACK, which took 7 ms to store one [8, 128, 768] float32 array this way,
while an integer sum stays in XLA's own kernel, fused with x's producers (under 1 ms with them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


def _as_bits(x):
    """x's bits as an unsigned integer array of its width (floats only; other dtypes as they are)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return lax.bitcast_convert_type(x, jnp.dtype(f"uint{x.dtype.itemsize * 8}"))
    return x


def _sum_with_zeros(xs):
    """Each x summed with zeros, all in one reduction over a new leading axis: XLA stores each result once."""
    padded = [lax.pad(x[None], jnp.zeros((), x.dtype), ((0, 1, 0),) + ((0, 0, 0),) * x.ndim) for x in xs]
    zeros = [jnp.zeros((), x.dtype) for x in xs]
    return lax.reduce(padded, zeros, lambda a, b: [u + v for u, v in zip(a, b)], (0,))


def stored_once(*xs):
    """xs, each computed once into memory by one reduction (its bits summed with zeros); consumers read it."""
    summed = _sum_with_zeros([_as_bits(x) for x in xs])
    return [lax.bitcast_convert_type(s, x.dtype) if s.dtype != x.dtype else s for s, x in zip(summed, xs)]


# The identity, stored once (on the CPU: through its bits; elsewhere: as a float sum with zeros, which
# leaves accelerator programs as they were). Linear and its own transpose, so gradients of gradients work.
stored_p = Primitive("stored_once")
stored_p.def_impl(lambda x: x)
stored_p.def_abstract_eval(lambda aval: aval)
mlir.register_lowering(stored_p, mlir.lower_fun(lambda x: _sum_with_zeros([x])[0], multiple_results=False))
mlir.register_lowering(stored_p, mlir.lower_fun(lambda x: stored_once(x)[0], multiple_results=False),
                       platform="cpu")
ad.deflinear2(stored_p, lambda cotangent, _: [stored_p.bind(cotangent)])
batching.defvectorized(stored_p)


@jax.custom_jvp
def materialize_gradient(x):
    """Identity whose cotangent XLA must store once instead of recomputing it in every consumer.

    In a pre-norm stack the gradient of the residual stream is a chain of elementwise adds through all
    later layers; XLA:CPU fuses that chain into each consumer (two matmul operands and the next add),
    so layer l recomputes the work of every layer above it: quadratic in depth, a quarter of a GPT-2
    small train step. The tangent map below transposes to a stored copy of the cotangent.
    """
    return x


@materialize_gradient.defjvp
def _jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    return x, stored_p.bind(tangent)
