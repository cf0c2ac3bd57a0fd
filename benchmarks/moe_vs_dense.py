"""Training throughput of moe_lm_tiny against its FLOP-matched dense twin dense_lm_tiny, on this CPU.

Both models train on the same batch on one device in one run, timed in alternating rounds so that
a shared machine's load falls on both alike (read the ratio rather than the absolute figures):

    python benchmarks/moe_vs_dense.py [--rounds 5] [--steps 10] [--set key=value ...]

Prints parameters, nominal matmul FLOPs per token (experts counted top_k times, the router and the
dispatch/combine einsums not at all), compile time and median tokens/s of each, then the MoE/dense ratio.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np

from plmjax import partitioning
from plmjax.config import MeshConfig, load_config
from plmjax.layers import runtime
from plmjax.models.task import make_model_task
from plmjax.training import state as state_lib
from plmjax.training.optimizer import make_optimizer
from plmjax.training.trainer import make_train_step

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def matmul_flops_per_token(config, params) -> float:
    """2 x the weights a token multiplies by (experts: top_k of E) + causal attention scores and mixing."""
    cfg = config.model
    active = 0.0
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if x.ndim >= 2 and "router" not in name and "position" not in name:
            active += x.size * (cfg.router_top_k / cfg.num_experts if "experts" in name else 1.0)
    attention = 2 * cfg.num_layers * config.data.seq_length * cfg.num_heads * cfg.kv_dim  # QK^T and AV, causal mean
    return 2 * active + attention


class Run:
    """One model's train step on one device, compiled; `tokens_per_s(steps)` times `steps` more steps."""

    def __init__(self, config, batch):
        self.config, self.batch = config, batch
        self.mesh = partitioning.make_mesh(MeshConfig(data=1), jax.devices()[:1])
        task = make_model_task(config)
        optimizer = make_optimizer(config.optimizer, config.train.num_steps)
        _, shardings = state_lib.state_shardings(task, optimizer, self.mesh, batch)
        self.state = state_lib.init_state(task, optimizer, batch, shardings, seed=0)
        with jax.set_mesh(self.mesh), partitioning.axis_rules():
            self.step = make_train_step(task, config, optimizer, shardings, self.mesh)
        start = time.perf_counter()
        self.tokens_per_s(1)  # compiles
        self.compile_s = time.perf_counter() - start
        self.params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.flops_per_token = matmul_flops_per_token(config, self.state.params)

    def tokens_per_s(self, steps: int) -> float:
        with jax.set_mesh(self.mesh), partitioning.axis_rules(), runtime.use(self.config.runtime):
            start = time.perf_counter()
            for _ in range(steps):
                self.state, metrics = self.step(self.state, self.batch)
            jax.block_until_ready(metrics)
        return self.config.data.batch_size * self.config.data.seq_length * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per model")
    parser.add_argument("--steps", type=int, default=10, help="train steps per round")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override both configs")
    args = parser.parse_args()
    dense = load_config(CONFIGS / "dense_lm_tiny.py", args.overrides)
    sparse = load_config(CONFIGS / "moe_lm_tiny.py", args.overrides)
    shape = (dense.data.batch_size, dense.data.seq_length + 1)
    ids = np.random.default_rng(0).integers(3, dense.model.vocab_size, shape)
    batch = {"input_ids": ids[:, :-1].astype(np.int32), "target_ids": ids[:, 1:].astype(np.int32),
             "weights": np.ones((dense.data.batch_size, dense.data.seq_length), np.float32)}
    print(f"batch {dense.data.batch_size} x {dense.data.seq_length} tokens, {args.rounds} rounds of {args.steps} "
          f"steps each, {jax.devices()[0].platform} x1")
    runs = {"dense_lm_tiny": Run(dense, batch), "moe_lm_tiny": Run(sparse, batch)}
    speeds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            speeds[name].append(run.tokens_per_s(args.steps))
    speed = {name: float(np.median(s)) for name, s in speeds.items()}
    for name, run in runs.items():
        print(f"{name:14s} params {run.params / 1e6:6.2f}M  matmul FLOPs/token {run.flops_per_token / 1e6:6.2f}M  "
              f"compile {run.compile_s:5.1f}s  {speed[name]:8.0f} tokens/s (median)")
    moe, base = runs["moe_lm_tiny"], runs["dense_lm_tiny"]
    print(f"MoE / dense: params x{moe.params / base.params:.2f}, "
          f"FLOPs/token x{moe.flops_per_token / base.flops_per_token:.2f}, "
          f"tokens/s x{speed['moe_lm_tiny'] / speed['dense_lm_tiny']:.2f}")


if __name__ == "__main__":
    main()
