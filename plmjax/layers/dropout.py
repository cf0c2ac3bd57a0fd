"""Inverted dropout whose keep masks come from narrow random integers, several per random word.

JAX's threefry makes one 32-bit word per element whatever width is asked for, so flax's Dropout pays a
full threefry2x32 per activation; on a CPU that is a sixth of a BERT-base train step. Comparing
`bits`-wide integers (32 // bits from each word) keeps the same statistics at a fraction of the cost;
the drop rate is rounded to a multiple of 2**-bits (16 bits: 0.1 -> 0.100006). bits=32 is exact.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ModelConfig


def keep_mask(rng, shape: tuple[int, ...], rate: float, bits: int):
    """Boolean mask (True = keep) and the keep probability actually applied."""
    threshold = round(rate * 2**bits)
    per_word = 32 // bits
    size = math.prod(shape)
    words = jax.random.bits(rng, (-(-size // per_word),), jnp.uint32)
    narrow = jax.lax.bitcast_convert_type(words, jnp.dtype(f"uint{bits}")).reshape(-1)[:size].reshape(shape)
    return narrow >= threshold, 1.0 - threshold / 2**bits


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
    """Dropout at `rate` (default cfg.dropout_rate) with the config's random-bit width."""
    return Dropout(cfg.dropout_rate if rate is None else rate, cfg.dropout_bits, name=name)
