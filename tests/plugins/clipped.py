"""A toy gradient function and a toy gradient transform, selected by config.

- train.gradient=per_example_clip: each example's gradient (a one-row batch's) clipped to norm
  train.per_example_clip.max_norm, then averaged (what DP-SGD does before its noise);
- train.grad_transform=scale: the batch gradient times train.scale.factor.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from plmjax.training.step import register_gradient, register_transform


@dataclasses.dataclass
class PerExampleClip:
    max_norm: float = 1.0


@dataclasses.dataclass
class Scale:
    factor: float = 1.0


def per_example_clip(config):
    max_norm = config.train.per_example_clip.max_norm

    def gradient(loss_fn, params, batch, rng):
        def one(row):
            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, jax.tree.map(lambda x: x[None], row), rng)
            factor = jnp.minimum(1.0, max_norm / jnp.maximum(optax.tree.norm(grads), 1e-12))
            return jax.tree.map(lambda g: g * factor, grads), metrics

        grads, metrics = jax.vmap(one)(batch)
        return jax.tree.map(lambda g: g.mean(0), grads), jax.tree.map(lambda m: m.mean(0), metrics)

    return gradient


def scale(config):
    factor = config.train.scale.factor
    return lambda grads, params, rng: jax.tree.map(lambda g: g * factor, grads)


register_gradient("per_example_clip", per_example_clip, PerExampleClip)
register_transform("scale", scale, Scale)
