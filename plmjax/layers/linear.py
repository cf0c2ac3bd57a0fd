"""Projections with logical axis names; `PROJECTION_KINDS` lets a method add deltas (e.g. low rank)."""

from __future__ import annotations

import functools
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
    Here the kernel gradient contracts x with the cotangent directly: one transposed input, shared by q, k
    and v. jax.vmap and reverse-over-reverse work; forward mode (jvp) needs `model.kernel_grads_in_layout=false`.
    """
    return contract_last_plain(x, kernel, n_in)


def _contract_last_fwd(x, kernel, n_in):
    return contract_last_plain(x, kernel, n_in), (x, kernel)


def _contract_last_bwd(n_in, residuals, dy):
    x, kernel = residuals
    n_batch = x.ndim - n_in
    dx = jnp.tensordot(dy, kernel, axes=(tuple(range(n_batch, dy.ndim)), tuple(range(n_in, kernel.ndim))))
    dkernel = jnp.tensordot(x, dy, axes=(tuple(range(n_batch)), tuple(range(n_batch))))
    return dx, dkernel


contract_last.defvjp(_contract_last_fwd, _contract_last_bwd)


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
