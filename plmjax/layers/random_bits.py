"""Counter-mode Threefry-2x32 random words laid out like an activation, for dropout masks.

The hash is JAX's own (`jax.extend.random.threefry_2x32`, Salmon et al. 2011, 20 rounds), written as
straight-line jnp ops that XLA compiles into one kernel: on CPU JAX lowers its threefry as a loop over
whole arrays, which measured ~5x slower per word and made dropout a tenth of a T5 train step.
Both output words of each block are used (JAX's partitionable `random.bits` XORs them into one), and
the counters follow the array's own axes, so a sharded activation gets its bits where it lives.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from plmjax.layers.gradients import stored_once

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA


def threefry2x32(key1, key2, x1, x2):
    """The Threefry-2x32 block function on uint32 arrays: two output words per counter pair (x1, x2)."""
    keys = (key1, key2, key1 ^ key2 ^ jnp.uint32(_KEY_PARITY))
    x1, x2 = x1 + keys[0], x2 + keys[1]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = x1 ^ ((x2 << rotation) | (x2 >> (32 - rotation)))
        x1 = x1 + keys[(block + 1) % 3]
        x2 = x2 + keys[(block + 2) % 3] + jnp.uint32(block + 1)
    return x1, x2


def _counters(shape: tuple[int, ...]):
    """Two uint32 arrays that number the elements of `shape`: (index on axis 0, index within its row)."""
    if max(shape[0], math.prod(shape[1:])) > 2**32:
        raise ValueError(f"random words for shape {shape}: more than 2**32 rows or elements per row")
    within = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in range(len(shape) - 1, 0, -1):
        within = within + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    return lax.broadcasted_iota(jnp.uint32, shape, 0), within


def random_uints(rng, shape: tuple[int, ...], bits: int):
    """Uniform `bits`-wide unsigned integers (8, 16 or 32, as uint32) of `shape`, 64 // bits per threefry block.

    Along the last axis, element j takes part j // m of block j % m (m blocks per row): the parts are
    picked by a broadcast select, which XLA fuses into the consumer; stacking them would cost ~8x more.
    """
    if bits not in (8, 16, 32):
        raise ValueError(f"random integers of {bits} bits: the widths are 8, 16 and 32")
    if not shape:
        return random_uints(rng, (1,), bits)[0]
    per_word = 32 // bits
    blocks = -(-shape[-1] // (2 * per_word))
    key1, key2 = jax.random.bits(rng, (2,), jnp.uint32)
    # Left to fusion, the hash would be copied into every consumer of the mask, forward and backward:
    # 2-3x the work and the compile time (T5-small's 48 dropout sites: +5 s of compile, stored +2 s).
    words = stored_once(*threefry2x32(key1, key2, *_counters((*shape[:-1], blocks))))
    first, second = (word[..., None, :] for word in words)
    part = lax.broadcasted_iota(jnp.uint32, (*shape[:-1], 2 * per_word, blocks), len(shape) - 1)
    word = jnp.where(part < per_word, first, second)
    if bits < 32:
        word = (word >> (part % per_word * bits)) & jnp.uint32(2**bits - 1)
    return word.reshape(*shape[:-1], 2 * per_word * blocks)[..., :shape[-1]]
