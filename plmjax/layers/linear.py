"""Projections with logical axis names; `PROJECTION_KINDS` lets a method add deltas (e.g. low rank)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import initializers


def contract_last_plain(x, kernel, n_in: int):
    """x's last `n_in` dims contracted with kernel's first, differentiated by JAX's own rules (forward mode too)."""
    return jnp.tensordot(x, kernel, axes=(tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract_last(x, kernel, n_in: int):
    """x's last `n_in` dims contracted with kernel's first, whose kernel gradient comes out in the kernel's layout.

    JAX transposes dot_general with the cotangent as its left operand, so a kernel's gradient is computed as
    [out, in] and then transposed. On XLA:CPU that transposes every projection's output gradient and kernel
    gradient (and for T5 recomputes the FFN's dropout mask inside one of them): 8% of a t5_small train step.
    Here the kernel gradient is `summed_outer(x, dy)`, [in, out] as the kernel is. jax.vmap and
    reverse-over-reverse work; forward mode (jvp) needs `model.kernel_grads_in_layout=false`.
    """
    return contract_last_plain(x, kernel, n_in)


def _contract_last_fwd(x, kernel, n_in):
    return contract_last_plain(x, kernel, n_in), (x, kernel)


def _contract_last_bwd(n_in, residuals, dy):
    x, kernel = residuals
    n_batch = x.ndim - n_in
    dx = jnp.tensordot(dy, kernel, axes=(tuple(range(n_batch, dy.ndim)), tuple(range(n_in, kernel.ndim))))
    return dx, summed_outer(x, dy, n_batch)


contract_last.defvjp(_contract_last_fwd, _contract_last_bwd)


def summed_outer(a, b, n_batch: int):
    """[*a's features, *b's features]: the outer product of a and b summed over their first `n_batch` dims.

    On the CPU both are flattened to [rows, features] and contracted over the rows: a contraction over
    (batch, length) has XLA:CPU transpose an operand into memory first (recomputing in it any elementwise
    producer, such as GELU), while the 2-D one runs as one matmul reading both in place (GPT-2 small's
    train step: 4.74-4.88 to 4.51-4.56 s; bert_base 3.57 to 3.37, t5_small 1.35 to 1.28). Elsewhere the
    dims are contracted as they are: for TPU the flattening costs memory (t5_xxl on v5p: 3 GB more a chip).
    """
    batch = tuple(range(n_batch))

    def rows_in_place(a, b):
        rows = math.prod(a.shape[:n_batch])
        product = jax.lax.dot_general(a.reshape(rows, -1), b.reshape(rows, -1), (((0,), (0,)), ((), ())))
        return product.reshape(a.shape[n_batch:] + b.shape[n_batch:])

    return jax.lax.platform_dependent(a, b, cpu=rows_in_place,
                                      default=lambda a, b: jnp.tensordot(a, b, axes=(batch, batch)))


def attend_plain(x, table):
    """Scores of x's last dim against each row of `table` [rows, features], by JAX's own rules."""
    return jnp.einsum("...e,ve->...v", x, table)


@jax.custom_vjp
def attend(x, table):
    """`attend_plain` whose table gradient is `summed_outer` of the scores' cotangent and x.

    For a tied LM head the cotangent is the logits' gradient, [batch, length, vocab]: JAX's own rule
    transposes all of it into memory (200 MB for GPT-2 small at 8 x 128) before the matmul.
    """
    return attend_plain(x, table)


def _attend_fwd(x, table):
    return attend_plain(x, table), (x, table)


def _attend_bwd(residuals, dy):
    x, table = residuals
    return jnp.tensordot(dy, table, axes=1), summed_outer(dy, x, x.ndim - 1)


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
        contract = contract_last if self.cfg.kernel_grads_in_layout else contract_last_plain
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
