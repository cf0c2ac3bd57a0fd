"""Logical-axis sharding: one rules table, the device mesh from config, shardings for state and batches.

Model code names axes (`batch`, `embed`, `heads`, ...); this table alone decides which mesh axis
(`data`, `expert`, `model`) each one is split over.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from plmjax.config import ConfigError, MeshConfig

MESH_AXES = ("data", "expert", "model")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "expert")),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("expert", "expert"),
    ("expert_group", "data"),  # MoE routing groups once the experts hold them (layers/moe.py)
    ("embed", None),
    ("hidden", None),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("position", None),
    ("segment", None),
    ("relpos_buckets", None),
    ("conv", None),
    ("labels", None),
)


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
    """Resolve the one -1 axis to the devices left over; fixed sizes may use fewer devices than exist."""
    sizes = [cfg.data, cfg.expert, cfg.model]
    if sizes.count(-1) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got data={cfg.data} expert={cfg.expert} model={cfg.model}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ConfigError(f"mesh axes {dict(zip(MESH_AXES, sizes))} do not divide {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) > num_devices:
        raise ConfigError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but {num_devices} are available"
        )
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, expert, model) mesh with Auto axes, so logical constraints work inside jit.

    A mesh whose fixed sizes need fewer devices than there are uses the first ones (with a warning).
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(cfg, len(devices))
    used = math.prod(shape)
    if used < len(devices):
        logging.warning("mesh %s uses %d of %d devices", dict(zip(MESH_AXES, shape)), used, len(devices))
    grid = np.asarray(devices[:used]).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def logical_shardings(abstract_tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a tree whose leaves may be nn.Partitioned boxes (unboxed in the result)."""
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """Batches split on their leading axis as `batch` says; all other axes replicated."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def axis_rules(rules=DEFAULT_RULES):
    """Context manager activating the rules for `nn.with_logical_constraint` inside traced code."""
    return nn.logical_axis_rules(rules)
