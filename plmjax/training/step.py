"""The train step, assembled from parts: a gradient function, a gradient transform, clipping, the update.

    grads, metrics = gradient(loss_fn, trainable, batch, rng)   # per micro-batch, summed over train.grad_accum_steps
    grads = transform(grads, trainable, rng)                    # train.grad_transform (identity by default)
    state = apply_gradients(state, grads, ...)                  # global-norm clipping, then the optimizer

`loss_fn(trainable, batch, rng) -> (loss, metrics)` is the model task's training loss of the trainable
parameters (the frozen ones held fixed). GRADIENTS and TRANSFORMS hold factories `(config) -> function`;
a kind with options registers a dataclass, read as config.train.<kind> and set with `--set train.<kind>.*`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from plmjax.config import Config, register_options
from plmjax.training import trainable as trainable_lib

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
GradientFn = Callable[[LossFn, Any, Any, jax.Array], tuple[Any, dict]]
Transform = Callable[[Any, Any, jax.Array], Any]

TRANSFORM_STREAM = 2**31 - 1  # the transform's random stream: fold_in(step key, this); micro-batches use 0, 1, ...
GRADIENTS: dict[str, Callable[[Config], GradientFn]] = {}
TRANSFORMS: dict[str, Callable[[Config], Transform]] = {}


def _register(table: dict, name: str, factory: Callable, options: type | None) -> None:
    if name in GRADIENTS or name in TRANSFORMS:
        raise ValueError(f"a gradient function or transform named {name!r} is already registered")
    if options is not None:
        register_options("train", name, options)
    table[name] = factory


def register_gradient(name: str, factory: Callable[[Config], GradientFn], options: type | None = None) -> None:
    """Make `factory(config) -> gradient(loss_fn, params, batch, rng) -> (grads, metrics)` train.gradient=`name`."""
    _register(GRADIENTS, name, factory, options)


def register_transform(name: str, factory: Callable[[Config], Transform], options: type | None = None) -> None:
    """Make `factory(config) -> transform(grads, params, rng) -> grads` train.grad_transform=`name`."""
    _register(TRANSFORMS, name, factory, options)


def plain_gradient(config: Config) -> GradientFn:
    """The gradient of the batch's mean loss."""

    def gradient(loss_fn, params, batch, rng):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        return grads, metrics

    return gradient


def identity_transform(config: Config) -> Transform:
    return lambda grads, params, rng: grads


register_gradient("plain", plain_gradient)
register_transform("identity", identity_transform)


def accumulate(gradient: GradientFn, steps: int) -> GradientFn:
    """`gradient` over `steps` equal micro-batches in a `lax.scan`, averaged (t5x's accumulate_grads_microbatched)."""
    if steps == 1:
        return gradient

    def accumulated(loss_fn, params, batch, rng):
        micro = jax.tree.map(lambda x: x.reshape((steps, x.shape[0] // steps) + x.shape[1:]), batch)

        def body(grad_sum, xs):
            micro_batch, index = xs
            grads, metrics = gradient(loss_fn, params, micro_batch, jax.random.fold_in(rng, index))
            return jax.tree.map(jnp.add, grad_sum, grads), metrics

        grads, metrics = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), (micro, jnp.arange(steps)))
        return jax.tree.map(lambda g: g / steps, grads), jax.tree.map(lambda m: m.mean(0), metrics)

    return accumulated


def clip_by_global_norm(grads, max_norm: float):
    """optax's global-norm clipping (0: none), applied to the gradients before the optimizer sees them."""
    if not max_norm:
        return grads
    return optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())[0]


def apply_gradients(state, grads, optimizer: optax.GradientTransformation, paths=None, max_norm: float = 0.0):
    """The state one optimizer step on: clipped `grads` of the trainable leaves (`paths`) update those alone."""
    grads = clip_by_global_norm(grads, max_norm)
    trained = trainable_lib.select(state.params, paths)
    updates, opt_state = optimizer.update(grads, state.opt_state, trained)
    params = trainable_lib.merge(state.params, optax.apply_updates(trained, updates))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class StepParts:
    """What a train step is made of; Trainer builds these from the config unless it is given them."""

    gradient: GradientFn
    transform: Transform
    paths: Any = None  # trainable leaf paths (training.trainable); None: every parameter trains


def parts_from_config(config: Config, paths=None) -> StepParts:
    return StepParts(GRADIENTS[config.train.gradient](config), TRANSFORMS[config.train.grad_transform](config), paths)


def make_step(task, config: Config, optimizer: optax.GradientTransformation, parts: StepParts, schedule):
    """(state, batch) -> (state, metrics), not yet jitted: the parts composed, metrics as the trainer logs them."""
    gradient = accumulate(parts.gradient, config.train.grad_accum_steps)
    base_rng = jax.random.key(config.train.seed)

    def train_step(state, batch):
        rng = jax.random.fold_in(base_rng, state.step)
        trained = trainable_lib.select(state.params, parts.paths)

        def loss_fn(params, batch, rng):
            return task.loss(trainable_lib.merge(state.params, params), batch, rng, train=True)

        grads, metrics = gradient(loss_fn, trained, batch, rng)
        grad_norm = optax.tree.norm(grads)
        grads = parts.transform(grads, trained, jax.random.fold_in(rng, TRANSFORM_STREAM))
        state = apply_gradients(state, grads, optimizer, parts.paths, config.optimizer.clip_grad_norm)
        metrics = dict(metrics, grad_norm=grad_norm, param_norm=optax.tree.norm(state.params),
                       learning_rate=schedule(state.step - 1))
        return state, metrics

    return train_step
