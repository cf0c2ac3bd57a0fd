"""Projections with logical axis names; `PROJECTION_KINDS` lets a method add deltas (e.g. low rank)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import initializers, runtime


def contract_last_plain(x, kernel, n_in: int):
    """x's last `n_in` dims contracted with kernel's first, differentiated by JAX's own rules (forward mode too)."""
    return jnp.tensordot(x, kernel, axes=(tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract_last(x, kernel, n_in: int):
    """x's last `n_in` dims contracted with kernel's first, whose kernel gradient comes out in the kernel's layout.

    JAX transposes dot_general with the cotangent as its left operand, so a kernel's gradient is computed as
    [out, in] and then transposed. On XLA:CPU that transposes every projection's output gradient and kernel
    gradient (and for T5 recomputes the FFN's dropout mask inside one of them): 8% of a t5_small train step.
    Here the kernel gradient is x contracted with dy over their batch axes, [in, out] as the kernel is, and
    both gradients are `tensordot_as_matrices`. jax.vmap and reverse-over-reverse work; forward mode (jvp)
    needs `runtime.kernel_grads_in_layout=false`.
    """
    return contract_last_plain(x, kernel, n_in)


def _contract_last_fwd(x, kernel, n_in):
    return contract_last_plain(x, kernel, n_in), (x, kernel)


def _contract_last_bwd(n_in, residuals, dy):
    x, kernel = residuals
    n_batch = x.ndim - n_in
    batch = tuple(range(n_batch))
    dx = tensordot_as_matrices(dy, kernel, tuple(range(n_batch, dy.ndim)), tuple(range(n_in, kernel.ndim)))
    return dx, tensordot_as_matrices(x, dy, batch, batch)


contract_last.defvjp(_contract_last_fwd, _contract_last_bwd)


def tensordot_as_matrices(a, b, a_axes: tuple[int, ...], b_axes: tuple[int, ...]):
    """`jnp.tensordot(a, b, (a_axes, b_axes))`; as matrices when the contracted axes lead or trail each operand.

    On the CPU as one 2-D matmul over the operands flattened to matrices, which XLA:CPU runs reading both
    in place, a contracted row dim included: contracting (batch, length) or (heads, kv) as they are makes
    it transpose an operand into memory first (recomputing in the copy any elementwise producer, such as
    GELU). GPT-2 small's train step went from 4.74-4.88 s to 4.43-4.52 with the kernel and table gradients
    as matrices and to 4.33-4.43 with the input gradients too; bert_base 3.57 to ~3.4, t5_small 1.35 to
    ~1.28. Elsewhere the axes are contracted as they are: for TPU the flattening costs memory (t5_xxl on
    v5p: 3 GB more a chip).
    """

    def as_they_are(a, b):
        return jnp.tensordot(a, b, (a_axes, b_axes))

    def matrix_dim(t, axes):  # 0 if the contracted axes lead t, 1 if they trail it, None otherwise
        if axes and tuple(axes) == tuple(range(len(axes))):
            return 0
        return 1 if axes and tuple(axes) == tuple(range(t.ndim - len(axes), t.ndim)) else None

    a_dim, b_dim = matrix_dim(a, a_axes), matrix_dim(b, b_axes)
    if a_dim is None or b_dim is None:  # e.g. an unbatched input: nothing to flatten
        return as_they_are(a, b)
    free = [n for axis, n in enumerate(a.shape) if axis not in a_axes]
    free += [n for axis, n in enumerate(b.shape) if axis not in b_axes]

    def matrices(a, b):
        def flat(t, axes, dim):
            size = math.prod(t.shape[axis] for axis in axes)
            return t.reshape(size, -1) if dim == 0 else t.reshape(-1, size)

        product = (flat(a, a_axes, a_dim), flat(b, b_axes, b_dim))
        return jax.lax.dot_general(*product, (((a_dim,), (b_dim,)), ((), ()))).reshape(free)

    return jax.lax.platform_dependent(a, b, cpu=matrices, default=as_they_are)


def attend_plain(x, table):
    """Scores of x's last dim against each row of `table` [rows, features], by JAX's own rules."""
    return jnp.einsum("...e,ve->...v", x, table)


@jax.custom_vjp
def attend(x, table):
    """`attend_plain` whose table gradient is the scores' cotangent contracted with x over their batch axes.

    For a tied LM head the cotangent is the logits' gradient, [batch, length, vocab]: JAX's own rule
    transposes all of it into memory (200 MB for GPT-2 small at 8 x 128) before the matmul.
    """
    return attend_plain(x, table)


def _attend_fwd(x, table):
    return attend_plain(x, table), (x, table)


def _attend_bwd(residuals, dy):
    x, table = residuals
    batch = tuple(range(x.ndim - 1))
    return jnp.tensordot(dy, table, axes=1), tensordot_as_matrices(dy, x, batch, batch)


attend.defvjp(_attend_fwd, _attend_bwd)


class Projection(nn.Module):
    """A DenseGeneral over the last `len(in_axes)` dims with named kernel and bias axes."""

    cfg: ModelConfig
    features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        n_in = len(self.in_axes)
        in_shape = x.shape[-n_in:]
        kernel_shape = tuple(in_shape) + tuple(self.features)
        init = initializers.kernel_init(
            self.cfg,
            in_axis=tuple(range(n_in)),
            out_axis=tuple(range(n_in, n_in + len(self.features))),
            scale=self.init_scale,
        )
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(init, self.in_axes + self.out_axes), kernel_shape
        )
        dtype = initializers.compute_dtype(self.cfg)
        contract = contract_last if runtime.current().kernel_grads_in_layout else contract_last_plain
        y = contract(x.astype(dtype), kernel.astype(dtype), n_in)
        if self.cfg.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes), self.features
            )
            y = y + bias.astype(dtype)
        return y


PROJECTION_KINDS: dict[str, type[nn.Module]] = {"dense": Projection}


def make_projection(
    cfg: ModelConfig,
    features: int | Sequence[int],
    in_axes: Sequence[str],
    out_axes: Sequence[str],
    name: str,
    init_scale: float = 1.0,
) -> nn.Module:
    """The projection kind the config names, shaped `in_axes -> out_axes`."""
    if cfg.projection_kind not in PROJECTION_KINDS:
        raise ValueError(
            f"unknown model.projection_kind {cfg.projection_kind!r}; known: {', '.join(PROJECTION_KINDS)}"
        )
    features = (features,) if isinstance(features, int) else tuple(features)
    return PROJECTION_KINDS[cfg.projection_kind](
        cfg, features, tuple(in_axes), tuple(out_axes), init_scale=init_scale, name=name
    )
