"""The train state and its shardings, derived from the parameters' logical axis names.

`params` is the whole parameter tree; `opt_state` covers only the trainable leaves (training.trainable),
so frozen parameters cost no optimizer memory.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from plmjax import partitioning
from plmjax.models.task import ModelTask
from plmjax.training.trainable import select


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _init_params(task: ModelTask, example_batch):
    one_row = jax.tree.map(lambda x: x[:1], example_batch)
    return lambda rng: task.init(rng, one_row)["params"]


def abstract_params(task: ModelTask, example_batch):
    """(boxed ShapeDtypeStructs with their logical axes, plain ShapeDtypeStructs) of the task's parameters."""
    boxed = jax.eval_shape(_init_params(task, example_batch), jax.random.key(0))
    return boxed, nn.meta.unbox(boxed)


def state_shardings(task: ModelTask, optimizer: optax.GradientTransformation, mesh: Mesh, example_batch,
                    paths=None):
    """(abstract TrainState with shardings attached, TrainState of NamedShardings); no weights made.

    `paths`: the trainable leaves (None: all), the only ones the optimizer state holds.
    """
    boxed, abstract_params_ = abstract_params(task, example_batch)
    param_shardings = partitioning.logical_shardings(boxed, mesh)
    abstract_opt = jax.eval_shape(optimizer.init, select(abstract_params_, paths))
    opt_shardings = optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        abstract_opt,
        select(param_shardings, paths),
        transform_non_params=lambda _: partitioning.replicated(mesh),
    )
    shardings = TrainState(step=partitioning.replicated(mesh), params=param_shardings, opt_state=opt_shardings)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params_, opt_state=abstract_opt)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def init_params(task: ModelTask, example_batch, shardings, seed: int):
    """A fresh initialisation of the parameters, made directly in their shards."""
    init = _init_params(task, example_batch)
    return jax.jit(lambda rng: nn.meta.unbox(init(rng)), out_shardings=shardings)(jax.random.key(seed))


def state_from_params(params, optimizer, shardings: TrainState, paths=None) -> TrainState:
    """Step 0 and a fresh optimizer state (over the trainable leaves) around given (already sharded) parameters."""

    def init(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(select(params, paths)))

    return jax.jit(init, out_shardings=shardings)(params)


def init_state(task, optimizer, example_batch, shardings: TrainState, seed: int, paths=None) -> TrainState:
    """Initialise parameters and optimizer state directly into their shards."""
    return state_from_params(init_params(task, example_batch, shardings.params, seed), optimizer, shardings, paths)
