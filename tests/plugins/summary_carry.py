"""A toy layer carry: a running summary vector passed layer to layer (`--set model.layer_carry=running_summary`).

The carry starts at zero; each layer adds its output's mean over real tokens to it, and adds
gate * tanh(carry) to every position of its output (gate: a learned scalar per layer, starting at 0.5).
"""

import flax.linen as nn
import jax.numpy as jnp

from plmjax.layers.hooks import LAYER_CARRIES, LayerCarry


def masked_mean(x, key_mask):
    if key_mask is None:
        return x.mean(1)
    weights = key_mask.astype(x.dtype)[:, :, None]
    return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


class Start(nn.Module):
    cfg: object

    def __call__(self, x, mask):
        return jnp.zeros((x.shape[0], x.shape[-1]), x.dtype)


class Step(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, x, carry, inputs, deterministic: bool = True):
        carry = carry + masked_mean(x, inputs.key_mask)
        gate = self.param("gate", nn.initializers.constant(0.5), ())
        return x + gate * jnp.tanh(carry)[:, None, :], carry


LAYER_CARRIES["running_summary"] = LayerCarry(Start, Step)
