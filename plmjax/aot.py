"""Ahead-of-time compilation of the real train step for a TPU slice, from any machine, with no weights.

`compile_train_step(config, "v5p:4x4x4")` builds the slice's devices with libtpu's topology
description, lays the config's mesh over them, lowers `trainer.make_train_step` on abstract state and
batch (ShapeDtypeStructs carrying their NamedShardings) and compiles it for TPU. The report gives
per-chip HBM (parameters, optimizer state, batch, activations/temporaries), whether that fits the chip,
model FLOPs per step and the compiler's estimated step time, hence an estimated MFU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import jax
import numpy as np

from plmjax import flops, partitioning
from plmjax.config import Config
from plmjax.layers import runtime
from plmjax.models.task import make_model_task
from plmjax.objectives import registry
from plmjax.training import state as state_lib
from plmjax.training import step as step_lib
from plmjax.training import trainable
from plmjax.training.optimizer import make_optimizer
from plmjax.training.trainer import make_train_step

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    hbm_bytes: int
    peak_flops: float  # dense bf16 FLOP/s


CHIPS = {  # by jax device_kind
    "TPU v4": Chip(32 * GIB, 275e12),
    "TPU v5 lite": Chip(16 * GIB, 197e12),
    "TPU v5": Chip(95 * GIB, 459e12),  # v5p
    "TPU v6 lite": Chip(32 * GIB, 918e12),
}


def batch_spec(config: Config) -> dict[str, jax.ShapeDtypeStruct]:
    """The model-ready features of a global batch of the config's objective (its registered feature spec)."""
    features = registry.for_config(config).features(config)
    return {name: jax.ShapeDtypeStruct((config.data.batch_size, *shape), dtype)
            for name, (shape, dtype) in features.items()}


MEGACORE = ("v4", "v5p")  # two TensorCores per chip, run as one device (as on the real VMs)


def topology_devices(topology: str) -> list:
    """TPU device descriptions, one per chip, of a slice such as v5p:4x4x4, v4:2x2x2 or v5e:4x4 (needs libtpu)."""
    from jax.experimental import topologies

    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # describing a slice claims no chips: let others run
    chip_config = "megacore" if topology.split(":")[0] in MEGACORE else "default"
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                                 chip_config_name=chip_config).devices)
    except Exception as error:  # libtpu missing or an unknown name
        raise ValueError(f"cannot describe TPU topology {topology!r} ({error}); "
                         'names look like v5p:4x4x4 and need `pip install "plmjax[tpu]"`') from None


@dataclasses.dataclass
class CompileReport:
    """Per-chip memory, fit and speed of one train step on a TPU slice."""

    topology: str
    chip: str
    num_chips: int
    mesh: dict[str, int]
    params_bytes: int  # per chip, after sharding
    optimizer_bytes: int
    batch_bytes: int
    temp_bytes: int  # activations and other temporaries; 0 when the compiler refused
    hbm_per_chip_bytes: int
    hbm_capacity_bytes: int
    fits: bool
    flops_per_step: int  # model FLOPs, all chips: 3x forward matmuls, no remat recompute
    compiler_flops_per_step: float  # XLA's count, all chips (elementwise included, loop bodies counted once)
    estimated_step_s: float | None  # XLA's estimate, loop iterations it skipped added at peak; None: none
    estimated_mfu: float | None
    compile_s: float
    compiler_message: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        gb = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
        lines = [
            f"{self.topology}: {self.num_chips} x {self.chip}, mesh {self.mesh}",
            f"  per-chip HBM   params {gb(self.params_bytes)}   optimizer {gb(self.optimizer_bytes)}",
            f"                 batch  {gb(self.batch_bytes)}   activations/temp {gb(self.temp_bytes)}",
            f"                 total  {gb(self.hbm_per_chip_bytes)} of {gb(self.hbm_capacity_bytes)}"
            f" -> {'fits' if self.fits else 'DOES NOT FIT'}",
            f"  FLOPs per step {self.flops_per_step:.3e} (model), {self.compiler_flops_per_step:.3e} (XLA's count)",
            f"  estimated step {self.estimated_step_s * 1e3:.1f} ms -> estimated MFU {self.estimated_mfu:.1%}"
            if self.estimated_step_s is not None else "  estimated step: none (not compiled, or no compiler estimate)",
        ]
        if self.compiler_message:
            lines.append(f"  compiler: {self.compiler_message}")
        lines.append(f"  compiled in {self.compile_s:.1f} s")
        return "\n".join(lines)


def _shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
               for leaf in jax.tree.leaves(tree))


def _temporaries_from_error(message: str) -> int:
    """The 'HLO temporaries (28.00G)' figure of a TPU out-of-memory error, or 0."""
    match = re.search(r"temporaries \(([\d.]+)([KMGT])\)", message)
    if not match:
        return 0
    return int(float(match.group(1)) * 1024 ** ("KMGT".index(match.group(2)) + 1))


def compile_train_step(config: Config, topology: str) -> CompileReport:
    """Lower and compile the config's train step for `topology` and report its memory and speed.

    When parameters, optimizer state and batch alone exceed a chip's HBM nothing is compiled.
    """
    devices = topology_devices(topology)
    chip = CHIPS.get(devices[0].device_kind)
    if chip is None:
        raise ValueError(f"no HBM/peak figures for {devices[0].device_kind!r}; known: {', '.join(CHIPS)}")
    mesh = partitioning.make_mesh(config.mesh, devices)
    task = make_model_task(config)
    optimizer = make_optimizer(config.optimizer, config.train.num_steps)
    spec = batch_spec(config)
    one_row = {k: np.zeros((1, *s.shape[1:]), s.dtype) for k, s in spec.items()}
    paths = trainable.trainable_paths(config.train.trainable, state_lib.abstract_params(task, one_row)[1])
    abstract_state, shardings = state_lib.state_shardings(task, optimizer, mesh, one_row, paths)
    batch_sharding = partitioning.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding) for k, s in spec.items()}
    resident = dict(params_bytes=_shard_bytes(abstract_state.params),
                    optimizer_bytes=_shard_bytes(abstract_state.opt_state), batch_bytes=_shard_bytes(batch))
    start = time.perf_counter()
    parts = step_lib.parts_from_config(config, paths)
    train_step = make_train_step(task, config, optimizer, shardings, mesh, parts)  # seeded on the host: off-mesh
    with jax.set_mesh(mesh), partitioning.axis_rules(), runtime.use(config.runtime):
        model_flops = flops.TRAIN_FACTOR * flops.forward_flops(
            lambda p, b: task.loss(p, b)[0], abstract_state.params, batch)
        traced = train_step.trace(abstract_state, batch)
        compiled, message = None, "parameters, optimizer state and batch alone exceed HBM: not compiled"
        if sum(resident.values()) <= chip.hbm_bytes:
            compiled, message = _compile(traced.lower())
    report = dict(topology=topology, chip=devices[0].device_kind, num_chips=len(devices), mesh=dict(mesh.shape),
                  hbm_capacity_bytes=chip.hbm_bytes, flops_per_step=model_flops, compiler_message=message, **resident)
    if compiled is None:
        temp = _temporaries_from_error(message)
        return CompileReport(temp_bytes=temp, hbm_per_chip_bytes=sum(resident.values()) + temp, fits=False,
                             compiler_flops_per_step=0.0, estimated_step_s=None, estimated_mfu=None,
                             compile_s=time.perf_counter() - start, **report)
    memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
             + memory.temp_size_in_bytes)
    compiler_flops = cost.get("flops", 0.0) * len(devices)
    slice_peak = len(devices) * chip.peak_flops
    step_s = _step_time(cost.get("optimal_seconds", 0.0), compiler_flops, flops.jaxpr_flops(traced.jaxpr.jaxpr),
                        slice_peak)
    return CompileReport(temp_bytes=memory.temp_size_in_bytes, hbm_per_chip_bytes=total,
                         fits=total <= chip.hbm_bytes, compiler_flops_per_step=compiler_flops, estimated_step_s=step_s,
                         estimated_mfu=model_flops / (step_s * slice_peak) if step_s else None,
                         compile_s=time.perf_counter() - start, **report)


def _step_time(optimal_s: float, compiler_flops: float, executed_flops: int, slice_peak: float) -> float | None:
    """XLA's step-time estimate, plus the loop iterations it did not count, at the slice's peak.

    XLA's cost analysis counts a loop body (nn.scan over layers, gradient accumulation) once;
    `executed_flops` counts every matmul the step runs, loops times their trip count and remat recompute
    included, so an estimate for a scanned model is optimistic by at most the loops' inefficiency.
    A non-positive estimate means XLA has none.
    """
    if optimal_s <= 0:
        return None
    return optimal_s + max(0.0, executed_flops - compiler_flops) / slice_peak


def _compile(lowered):
    """(compiled, "") or, when the compiler finds the step does not fit, (None, its message)."""
    try:
        return lowered.compile(), ""
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return None, str(error).splitlines()[0]
