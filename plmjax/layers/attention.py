"""Multi-head attention: projections, key/value cache and learned prefixes around a swappable kernel.

The kernel (`ATTENTION_KERNELS[cfg.attention_kind]`) is how scores and context are computed: it gets the
projected queries, keys and values [batch, length, heads, head_dim] and `AttentionInputs` — the additive
bias the stack built (padding, causal, prefix-LM and relative-position terms), the query and key positions,
the key mask, and what the stack's shared module computed for it (`Kernel.Shared`, e.g. a relative-embedding
table made once per stack) — plus the layer carry (state a layer passes to the next). It returns context
vectors and the carry. Projections, the decoding cache and prefixes stay here, so a new kind writes only a
kernel; a kernel with a `projections` field also gets the query/key/value projection modules (`Projections`).
Kernels sow what they attend with into the ATTENTION_WEIGHTS collection, which costs nothing unless a model
task asks for it (ModelTask.collections).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from plmjax.config import ModelConfig
from plmjax.layers import hooks, initializers
from plmjax.layers.dropout import make_dropout
from plmjax.layers.linear import make_projection

ATTENTION_WEIGHTS = "attention_weights"  # sown: {..., "self_attention"|"cross_attention": {"kernel": {"weights"}}}


@struct.dataclass
class AttentionInputs:
    """What a kernel may read besides queries, keys and values."""

    bias: jax.Array | None  # additive float32 [batch|1, heads|1, queries, keys]; None: every key visible
    query_positions: jax.Array  # [batch, queries]
    key_positions: jax.Array  # [batch|1, keys]; learned prefix keys are at -1
    key_mask: jax.Array | None = None  # [batch, keys], True on real keys; None: all real
    shared: Any = None  # what the stack's `Kernel.Shared` module returned (self-attention only)
    aligned: bool = struct.field(pytree_node=False, default=False)  # queries and keys both at positions 0..L-1

    def with_prefix(self, length: int) -> AttentionInputs:
        """The inputs for `length` learned keys prepended to the keys (visible to every query)."""
        key_positions = jnp.concatenate(
            [jnp.full(self.key_positions.shape[:1] + (length,), -1, self.key_positions.dtype), self.key_positions], 1)
        key_mask = None if self.key_mask is None else jnp.pad(self.key_mask, [(0, 0), (length, 0)], constant_values=1)
        bias = None if self.bias is None else jnp.pad(self.bias, [(0, 0)] * 3 + [(length, 0)])
        return self.replace(bias=bias, key_positions=key_positions, key_mask=key_mask, aligned=False)


@struct.dataclass
class Projections:
    """The attention's query/key/value projection modules, given to a kernel that declares a `projections`
    field (to project more than the tokens with the same weights, e.g. relative-position embeddings)."""

    query: Any = struct.field(pytree_node=False)
    key: Any = struct.field(pytree_node=False)
    value: Any = struct.field(pytree_node=False)


def sow_weights(kernel: nn.Module, weights) -> None:
    """Keep a kernel's attention weights in ATTENTION_WEIGHTS when that collection is mutable (never at init)."""
    if not kernel.is_initializing():
        kernel.sow(ATTENTION_WEIGHTS, "weights", weights)


class SoftmaxKernel(nn.Module):
    """Scaled dot-product attention: softmax(q k^T / sqrt(d) + bias) v."""

    cfg: ModelConfig
    causal: bool = False

    Shared = None  # no per-stack module

    @nn.compact
    def __call__(self, query, key, value, inputs: AttentionInputs, carry=None, deterministic: bool = True):
        cfg = self.cfg
        if cfg.scale_attention:
            query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        if inputs.bias is not None:
            logits = logits + inputs.bias
        weights = jax.nn.softmax(logits, axis=-1).astype(initializers.compute_dtype(cfg))
        sow_weights(self, weights)
        weights = make_dropout(cfg, cfg.attention_dropout_rate)(weights, deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, value), carry


ATTENTION_KERNELS: dict[str, type[nn.Module]] = {"softmax": SoftmaxKernel}


def kernel_class(cfg: ModelConfig) -> type[nn.Module]:
    return hooks.lookup(ATTENTION_KERNELS, "model.attention_kind", cfg.attention_kind)


class Attention(nn.Module):
    """Query/key/value projections, the kernel, the output projection; in `decode` mode keys/values accumulate
    in the 'cache' collection; self-attention may prepend learned keys/values (model.kv_prefix)."""

    cfg: ModelConfig
    self_attention: bool = True
    causal: bool = False

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, inputs: AttentionInputs, carry=None, deterministic: bool = True,
                 decode: bool = False):
        cfg = self.cfg
        heads, head_dim = cfg.num_heads, cfg.kv_dim
        query_init_scale = 1.0 if cfg.scale_attention else 1.0 / head_dim
        project = lambda name, scale=1.0: make_projection(  # noqa: E731
            cfg, (heads, head_dim), ("embed",), ("heads", "kv"), name, init_scale=scale
        )
        projections = Projections(project("query", query_init_scale), project("key"), project("value"))
        query, key, value = projections.query(inputs_q), projections.key(inputs_kv), projections.value(inputs_kv)
        if decode:
            key, value = self._extend_cache(key, value)
        if self.self_attention and cfg.kv_prefix:
            prefix_cls = hooks.lookup(hooks.KV_PREFIXES, "model.kv_prefix", cfg.kv_prefix)
            prefix_key, prefix_value = prefix_cls(cfg, name="kv_prefix")(query.shape[0])
            key = jnp.concatenate([prefix_key.astype(key.dtype), key], axis=1)
            value = jnp.concatenate([prefix_value.astype(value.dtype), value], axis=1)
            inputs = inputs.with_prefix(prefix_key.shape[1])
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
        kernel_cls = kernel_class(cfg)
        extra = {"projections": projections} if "projections" in getattr(kernel_cls, "__dataclass_fields__", {}) else {}
        kernel = kernel_cls(cfg, causal=self.causal and self.self_attention, name="kernel", **extra)
        context, carry = kernel(query, key, value, inputs, carry, deterministic)
        context = nn.with_logical_constraint(context, ("batch", "length", "heads", "kv"))
        return make_projection(cfg, cfg.hidden_size, ("heads", "kv"), ("embed",), "out")(context), carry

    def _extend_cache(self, key, value):
        """Write this step's keys/values at the cache index; the first (init) call only sizes the cache."""
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            return key, value
        start = (0, index.value, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype), start)
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, value.astype(cached_value.value.dtype), start
        )
        index.value = index.value + key.shape[1]
        return cached_key.value, cached_value.value


def make_attention(cfg: ModelConfig, name: str, self_attention: bool = True, causal: bool = False) -> nn.Module:
    kernel_class(cfg)  # an unknown kind fails here, naming the known ones
    return Attention(cfg, self_attention=self_attention, causal=causal, name=name)
