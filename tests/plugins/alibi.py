"""A toy attention kernel that needs positions: softmax attention minus a per-head linear distance penalty,
slope_h * |query - key| (ALiBi), its slopes one learned table per stack (the kernel's `Shared` module,
starting at ALiBi's 2^(-8h/H)). A kernel only: projections, cache and prefixes are the core's."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.layers.attention import ATTENTION_KERNELS


class Slopes(nn.Module):
    """Made once per stack; every layer's kernel reads what it returns as `inputs.shared`."""

    cfg: object
    causal: bool = False

    @nn.compact
    def __call__(self, query_positions, key_positions):
        heads = self.cfg.num_heads
        init = lambda key, shape: 2.0 ** (-8.0 * jnp.arange(1, heads + 1) / heads)  # noqa: E731
        return self.param("slopes", init, (heads,))


class AlibiKernel(nn.Module):
    cfg: object
    causal: bool = False

    Shared = Slopes

    @nn.compact
    def __call__(self, query, key, value, inputs, carry=None, deterministic: bool = True):
        distance = jnp.abs(inputs.query_positions[:, :, None] - inputs.key_positions[:, None, :])  # [b, q, k]
        logits = jnp.einsum("bqhd,bkhd->bhqk", query / jnp.sqrt(query.shape[-1]), key)
        logits = logits - inputs.shared[None, :, None, None] * distance[:, None].astype(jnp.float32)
        if inputs.bias is not None:
            logits = logits + inputs.bias
        weights = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, value), carry


ATTENTION_KERNELS["alibi"] = AlibiKernel
