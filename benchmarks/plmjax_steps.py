"""plmjax's own train step (trainer.make_train_step) and eval forward (trainer.make_eval_step), compiled ahead."""

from __future__ import annotations

import time

import jax
import numpy as np
from measure import Runner

from plmjax import flops, partitioning
from plmjax.config import Config, MeshConfig
from plmjax.layers import runtime
from plmjax.models.task import make_model_task
from plmjax.training import state as state_lib
from plmjax.training.optimizer import make_optimizer
from plmjax.training.trainer import make_eval_step, make_train_step


def _nbytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def _compile(lower) -> tuple:
    """(compiled step, seconds to lower and compile it)."""
    start = time.perf_counter()
    compiled = lower().compile()
    return compiled, time.perf_counter() - start


def build(config: Config, batch: dict[str, np.ndarray], modes: tuple[str, ...], mesh=None) -> dict[str, Runner]:
    """A Runner per mode (`train`: the train step; `infer`: the eval forward), sharing one state, on `mesh`
    (default: one device)."""
    mesh = mesh or partitioning.make_mesh(MeshConfig(data=1), jax.devices()[:1])
    task = make_model_task(config)
    optimizer = make_optimizer(config.optimizer, config.train.num_steps)
    _, shardings = state_lib.state_shardings(task, optimizer, mesh, batch)
    carry = [state_lib.init_state(task, optimizer, batch, shardings, config.train.seed)]
    device_batch = jax.device_put(batch, partitioning.batch_sharding(mesh))
    runners = {}
    with jax.set_mesh(mesh), partitioning.axis_rules(), runtime.use(config.runtime):
        forward = flops.forward_flops(lambda p, b: task.loss(p, b)[0], carry[0].params, device_batch)
        if "train" in modes:
            train_step, setup_s = _compile(
                lambda: make_train_step(task, config, optimizer, shardings, mesh).lower(carry[0], device_batch))

            def run_train(n: int) -> None:
                for _ in range(n):  # no host sync between steps, as in the trainer
                    carry[0], metrics = train_step(carry[0], device_batch)
                jax.block_until_ready(metrics)

            runners["train"] = Runner(run_train, setup_s, forward * flops.TRAIN_FACTOR, _nbytes(carry[0]), train_step)
        if "infer" in modes:
            eval_step, setup_s = _compile(
                lambda: make_eval_step(task, shardings, mesh).lower(carry[0].params, device_batch))

            def run_infer(n: int) -> None:
                for _ in range(n):
                    metrics = eval_step(carry[0].params, device_batch)
                jax.block_until_ready(metrics)

            runners["infer"] = Runner(run_infer, setup_s, forward, _nbytes(carry[0].params), eval_step)
    return runners
