"""Inverted dropout whose keep masks come from narrow random integers, several per threefry block.

flax's Dropout draws a 32-bit word per element from `jax.random`, a full threefry block each; on a CPU
that was a sixth of a BERT-base train step. Comparing `bits`-wide integers (64 // bits per block, see
random_bits.py) keeps the same statistics at a fraction of the cost; the drop rate is rounded to a
multiple of 2**-bits (16 bits: 0.1 -> 0.100006). bits=32 is flax's rate exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import runtime
from plmjax.layers.random_bits import random_uints


def keep_mask(rng, shape: tuple[int, ...], rate: float, bits: int):
    """Boolean mask (True = keep) and the keep probability actually applied."""
    threshold = round(rate * 2**bits)
    return random_uints(rng, shape, bits) >= threshold, 1.0 - threshold / 2**bits


class Dropout(nn.Module):
    """Zeroes each element with probability `rate` (rounded to 2**-bits) and scales the rest to keep the mean."""

    rate: float
    bits: int = 16

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        keep, kept = keep_mask(self.make_rng("dropout"), x.shape, self.rate, self.bits)
        if kept == 0.0:
            return jnp.zeros_like(x)
        return jnp.where(keep, x / jnp.asarray(kept, x.dtype), jnp.zeros_like(x))


def make_dropout(cfg: ModelConfig, rate: float | None = None, name: str | None = None) -> Dropout:
    """Dropout at `rate` (default cfg.dropout_rate) with the random-bit width of runtime.dropout_bits."""
    return Dropout(cfg.dropout_rate if rate is None else rate, runtime.current().dropout_bits, name=name)
