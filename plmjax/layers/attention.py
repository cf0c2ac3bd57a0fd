"""Multi-head attention (self and cross) with an autoregressive key/value cache.

Masks arrive as one additive float32 bias [batch|1, heads|1, queries, keys] built by the stack
(padding, causal, prefix-LM and relative-position terms), so attention kinds only combine it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import hooks, initializers
from plmjax.layers.dropout import make_dropout
from plmjax.layers.linear import make_projection


class SoftmaxAttention(nn.Module):
    """Scaled dot-product attention; in `decode` mode keys/values accumulate in the 'cache' collection."""

    cfg: ModelConfig
    self_attention: bool = True

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, bias=None, deterministic: bool = True, decode: bool = False):
        cfg = self.cfg
        heads, head_dim = cfg.num_heads, cfg.kv_dim
        query_init_scale = 1.0 if cfg.scale_attention else 1.0 / head_dim
        project = lambda name, scale=1.0: make_projection(  # noqa: E731
            cfg, (heads, head_dim), ("embed",), ("heads", "kv"), name, init_scale=scale
        )
        query = project("query", query_init_scale)(inputs_q)
        key = project("key")(inputs_kv)
        value = project("value")(inputs_kv)
        if decode:
            key, value = self._extend_cache(key, value)
        if self.self_attention and cfg.kv_prefix:
            prefix_cls = hooks.lookup(hooks.KV_PREFIXES, "model.kv_prefix", cfg.kv_prefix)
            prefix_key, prefix_value = prefix_cls(cfg, name="kv_prefix")(query.shape[0])
            key = jnp.concatenate([prefix_key.astype(key.dtype), key], axis=1)
            value = jnp.concatenate([prefix_value.astype(value.dtype), value], axis=1)
            if bias is not None:
                bias = jnp.pad(bias, [(0, 0)] * 3 + [(prefix_key.shape[1], 0)])
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
        if cfg.scale_attention:
            query = query / jnp.sqrt(head_dim).astype(query.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias
        weights = jax.nn.softmax(logits, axis=-1).astype(initializers.compute_dtype(cfg))
        weights = make_dropout(cfg, cfg.attention_dropout_rate)(weights, deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        context = nn.with_logical_constraint(context, ("batch", "length", "heads", "kv"))
        return make_projection(cfg, cfg.hidden_size, ("heads", "kv"), ("embed",), "out")(context)

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


ATTENTION_KINDS: dict[str, type[nn.Module]] = {"softmax": SoftmaxAttention}


def make_attention(cfg: ModelConfig, name: str, self_attention: bool = True) -> nn.Module:
    if cfg.attention_kind not in ATTENTION_KINDS:
        raise ValueError(
            f"unknown model.attention_kind {cfg.attention_kind!r}; known: {', '.join(ATTENTION_KINDS)}"
        )
    return ATTENTION_KINDS[cfg.attention_kind](cfg, self_attention=self_attention, name=name)
