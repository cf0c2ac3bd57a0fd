"""Registries of optional parts that methods plug into the core without editing it.

- RESIDUAL_ADAPTERS: Module(cfg), called as `m(sublayer_output, deterministic)` right before each
  residual addition (after attention and after the FFN) — adapters, gating.
- HIDDEN_HOOKS: Module(cfg), called as `m(x, mask, layer_index, deterministic) -> (x, mask)` after
  every layer — hidden-state noise, tokens inserted between layer k and k+1.
- KV_PREFIXES: Module(cfg), called as `m(batch_size) -> (keys, values)` each [batch, prefix, heads,
  head_dim], prepended to every self-attention's keys and values — prefix-tuning.
- LAYER_CARRIES: a `LayerCarry` of two Module(cfg) classes: `start(x, mask) -> carry` once per stack, and
  `step(x, carry, inputs, deterministic) -> (x, carry)` at the end of every layer (inside nn.scan too);
  attention kernels get the carry as well and may replace it — state passed layer to layer (Luna's
  packed sequence, a running summary).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

RESIDUAL_ADAPTERS: dict[str, type[nn.Module]] = {}
HIDDEN_HOOKS: dict[str, type[nn.Module]] = {}
KV_PREFIXES: dict[str, type[nn.Module]] = {}


@dataclasses.dataclass(frozen=True)
class LayerCarry:
    start: type[nn.Module]  # (x, mask) -> carry, a pytree of arrays with a fixed shape
    step: type[nn.Module]  # (x, carry, AttentionInputs, deterministic) -> (x, carry)


LAYER_CARRIES: dict[str, LayerCarry] = {}


def lookup(registry: dict, key: str, name: str):
    """The entry `name` in `registry`, or an error naming the config key and known kinds."""
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none registered"
        raise ValueError(f"unknown {key} {name!r}; known: {known}")
    return registry[name]


def layer_carry(cfg) -> LayerCarry:
    return lookup(LAYER_CARRIES, "model.layer_carry", cfg.layer_carry)
