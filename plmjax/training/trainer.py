"""The training loop: sharded state, jitted train/eval steps, checkpoints, metrics, progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Callable

import jax
import numpy as np
import optax
from etils import epath
from tqdm import tqdm

from plmjax import distributed, partitioning
from plmjax.config import Config, to_dict
from plmjax.data import sources
from plmjax.layers import runtime
from plmjax.models.task import ModelTask, make_model_task
from plmjax.training import state as state_lib
from plmjax.training import step as step_lib
from plmjax.training import trainable, transfer
from plmjax.training.checkpoints import Checkpointer
from plmjax.training.metrics import MetricsWriter
from plmjax.training.optimizer import make_optimizer, make_schedule
from plmjax.training.step import StepParts
from plmjax.training.preemption import PreemptionWatch


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step."""


class Preempted(Exception):
    """A preemption notice (SIGTERM) stopped the run after a checkpoint was saved; the same command resumes it."""


def make_train_step(task: ModelTask, config: Config, optimizer, shardings, mesh, parts: StepParts | None = None,
                    ) -> Callable:
    """jit(state, batch) -> (state, metrics): `parts` (default: from the config) composed by training.step."""
    parts = parts or step_lib.parts_from_config(config)
    schedule = make_schedule(config.optimizer, config.train.num_steps)
    return jax.jit(
        step_lib.make_step(task, config, optimizer, parts, schedule),
        in_shardings=(shardings, partitioning.batch_sharding(mesh)),
        out_shardings=(shardings, partitioning.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(task: ModelTask, shardings, mesh) -> Callable:
    return jax.jit(
        lambda params, batch: task.loss(params, batch, train=False)[1],
        in_shardings=(shardings.params, partitioning.batch_sharding(mesh)),
        out_shardings=partitioning.replicated(mesh),
    )


def global_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """The step's global batch as one data-sharded array, to which this process feeds only the rows its devices hold.

    Every process builds the same global batch (a pure function of the step), so any number of processes
    trains exactly as one does.
    """
    sharding = partitioning.batch_sharding(mesh)
    rows = distributed.process_rows(sharding, len(next(iter(batch.values()))))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)[rows], np.shape(v))
            for k, v in batch.items()}


class Trainer:
    """Builds everything a run needs from a Config and a workdir, then `run()`s it (resuming if possible).

    The model task, optimizer, gradient function and gradient transform come from the config unless given.
    With train.trainable set only those leaves train, and checkpoints hold them alone plus a fingerprint of
    the base they were trained on (train.init_from's parameters, or the seed's fresh ones).
    """

    def __init__(self, config: Config, workdir: str, progress: bool = True, *, task: ModelTask | None = None,
                 optimizer: optax.GradientTransformation | None = None, gradient: step_lib.GradientFn | None = None,
                 transform: step_lib.Transform | None = None):
        self.config, self.workdir, self.progress = config, workdir, progress
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local directory or a gs:// URL
        self.mesh = partitioning.make_mesh(config.mesh)
        self.task = task or make_model_task(config)
        self.tokenizer = distributed.process_zero_first(lambda: sources.build_vocabulary(config, workdir), "tokenizer")
        self.train_source = sources.make_source(config, self.tokenizer, "train")
        self.eval_source = sources.make_source(config, self.tokenizer, "eval")
        self._check_batch_size()
        self.example = self.train_source.batch(0)
        self.task.validate(self.example)
        self.optimizer = optimizer or make_optimizer(config.optimizer, config.train.num_steps)
        self.paths = trainable.trainable_paths(config.train.trainable, state_lib.abstract_params(self.task, self.example)[1])
        self.abstract_state, self.shardings = state_lib.state_shardings(self.task, self.optimizer, self.mesh,
                                                                        self.example, self.paths)
        self.stored_abstract = self._stored(self.abstract_state)
        defaults = step_lib.parts_from_config(config, self.paths)
        self.parts = step_lib.StepParts(gradient or defaults.gradient, transform or defaults.transform, self.paths)
        self.checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
        self.metrics = MetricsWriter(workdir, enabled=jax.process_index() == 0)
        self.base: dict | None = None  # trainable-only runs: what the frozen parameters are (see _base_params)
        with self.context():
            self.train_step = make_train_step(self.task, config, self.optimizer, self.shardings, self.mesh, self.parts)
            self.eval_step = make_eval_step(self.task, self.shardings, self.mesh)

    @contextlib.contextmanager
    def context(self):
        """Mesh, logical-axis rules and runtime settings active while tracing."""
        with jax.set_mesh(self.mesh), partitioning.axis_rules(), runtime.use(self.config.runtime):
            yield

    def _check_batch_size(self):
        cfg = self.config
        shards = math.prod(self.mesh.shape[a] for a in ("data", "expert"))
        micro = cfg.data.batch_size // max(cfg.train.grad_accum_steps, 1)
        if cfg.data.batch_size % cfg.train.grad_accum_steps or micro % shards:
            raise ValueError(
                f"data.batch_size={cfg.data.batch_size} must split into train.grad_accum_steps="
                f"{cfg.train.grad_accum_steps} micro-batches each divisible by the {shards} batch shards of the mesh"
            )

    def _stored(self, state):
        """What a checkpoint holds of `state`: all of it, or with only the trainable parameters."""
        return state if self.paths is None else state.replace(params=trainable.select(state.params, self.paths))

    def _base_params(self):
        """The start parameters (training.transfer.start_params) and, for trainable-only runs, `self.base`: what
        the frozen parameters are, which checkpoints record and every restore checks."""
        fresh = lambda: state_lib.init_params(self.task, self.example, self.shardings.params,  # noqa: E731
                                              self.config.train.seed)
        params = transfer.start_params(self.config, self.abstract_state.params, fresh)
        if self.paths is not None:
            self.base = transfer.base_record(self.config, params, self.paths)
        return params

    def initial_state(self) -> state_lib.TrainState:
        """The latest readable checkpoint in the workdir if there is one (on its base, for trainable-only runs),
        else the start parameters with a fresh optimizer state."""
        restored = self.checkpointer.restore_latest(self.stored_abstract)
        if restored is not None and self.paths is None:
            return restored
        params = self._base_params()
        if restored is None:
            return state_lib.state_from_params(params, self.optimizer, self.shardings, self.paths)
        self._check_base(int(restored.step))
        return restored.replace(params=trainable.merge(params, restored.params))

    def _check_base(self, step: int) -> None:
        transfer.check_base(self.checkpointer.restore_extra(step).get("base"), self.base,
                            f"checkpoint step {step} in {self.checkpointer.directory}")

    def restore_params(self, step: int | None = None):
        """The parameters of checkpoint `step` (default: the latest), on their base for trainable-only runs."""
        step = self.checkpointer.latest_step() if step is None else step
        if self.paths is None:
            return self.checkpointer.restore_params(step, self.abstract_state.params)
        params = self._base_params()
        self._check_base(step)
        return trainable.merge(params, self.checkpointer.restore_params(step, self.stored_abstract.params))

    def evaluate(self, params) -> dict[str, float]:
        """Mean of each metric over `eval_steps` fixed eval batches."""
        totals: dict[str, float] = {}
        steps = max(self.config.train.eval_steps, 1)
        with self.context():
            for i in range(steps):
                batch = self.eval_source.batch(i)
                self.task.validate(batch)
                for key, value in jax.device_get(self.eval_step(params, global_batch(batch, self.mesh))).items():
                    totals[key] = totals.get(key, 0.0) + float(value) / steps
        return totals

    def save(self, state: state_lib.TrainState) -> None:
        extra = {"config": to_dict(self.config), **({"base": self.base} if self.paths is not None else {})}
        self.checkpointer.save(int(state.step), self._stored(state), extra=extra, force=True)

    def run(self, num_steps: int | None = None) -> dict[str, float]:
        """Train up to `num_steps` (default: train.num_steps), evaluate, save; returns final eval metrics."""
        cfg = self.config.train
        end = cfg.num_steps if num_steps is None else num_steps
        self._write_run_config()
        state = self.initial_state()
        start = int(state.step)
        tokens_per_step = self.config.data.batch_size * self.config.data.seq_length
        bar = tqdm(total=end, initial=start, desc="train", disable=not self.progress, dynamic_ncols=True)
        last_time, last_step = time.perf_counter(), start
        preempted = False
        with self.context(), PreemptionWatch() as preemption:
            for step in range(start, end):
                batch = self.train_source.batch(step)
                self.task.validate(batch)
                state, metrics = self.train_step(state, global_batch(batch, self.mesh))
                done = step + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == end:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    self._check_finite(values, done)
                    now = time.perf_counter()
                    values["tokens_per_s"] = tokens_per_step * (done - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, done
                    self.metrics.write(done, values)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_s']:.0f}")
                if preemption.reached(done) and done != end:  # every process stops after the same step
                    self._check_finite(jax.device_get(metrics), done)
                    preempted = True
                    break
                if cfg.eval_every and done % cfg.eval_every == 0 and done != end:
                    self.metrics.write(done, self.evaluate(state.params), prefix="eval_")
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != end:
                    self._check_finite(jax.device_get(metrics), done)
                    self.save(state)
            bar.close()
            if int(state.step) > start or self.checkpointer.latest_step() is None:
                self.save(state)
            self.checkpointer.wait()
        if preempted:
            raise Preempted(f"preempted after step {int(state.step)}: checkpoint saved in {self.checkpointer.directory}; "
                            "run the same command again to resume")
        final = self.evaluate(state.params)
        self.metrics.write(int(state.step), final, prefix="eval_")
        self.state = state
        return final

    def _check_finite(self, metrics, step: int) -> None:
        """Stop before a non-finite loss or update can reach a checkpoint."""
        loss, param_norm = float(metrics["loss"]), float(metrics["param_norm"])
        if not (math.isfinite(loss) and math.isfinite(param_norm)):
            raise TrainingError(
                f"non-finite training at step {step} (loss {loss}, parameter norm {param_norm}); stopping. "
                f"The last good checkpoint "
                f"(step {self.checkpointer.latest_step()}) is kept in {self.workdir}/checkpoints"
            )

    def _write_run_config(self) -> None:
        if jax.process_index() == 0:
            (epath.Path(self.workdir) / "config.json").write_text(json.dumps(to_dict(self.config), indent=2))

    def close(self) -> None:
        self.checkpointer.close()
        self.metrics.close()

