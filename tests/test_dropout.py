"""Narrow-bit dropout: the rate (rounded to 2**-bits), the kept mean and independent masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import ConfigError, bert, load_config, t5
from plmjax.layers.dropout import Dropout, keep_mask
from plmjax.layers.ffn import FeedForward
from plmjax.layers.random_bits import random_uints, threefry2x32


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_dropout_drops_at_the_rounded_rate_and_keeps_the_mean(bits):
    x = jnp.ones((64, 257, 33))  # sizes not divisible by the masks per random word
    y = Dropout(0.1, bits).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    dropped = float(jnp.mean(y == 0))
    applied = round(0.1 * 2**bits) / 2**bits
    assert abs(dropped - applied) < 4 * np.sqrt(applied * (1 - applied) / x.size)
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / (1 - applied)], rtol=1e-6)
    assert abs(float(jnp.mean(y)) - 1.0) < 0.01


def test_dropout_masks_are_independent_across_elements_and_keys():
    shape = (512, 256)
    first, _ = keep_mask(jax.random.key(1), shape, 0.5, 8)
    second, _ = keep_mask(jax.random.key(2), shape, 0.5, 8)
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    # Neighbours share a random word (4 masks per word): their correlation must still vanish.
    assert abs(np.corrcoef(first[:, :-1].ravel(), first[:, 1:].ravel())[0, 1]) < 0.02
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.02


def test_threefry_block_function_is_jax_threefry_bit_for_bit():
    counts = jax.random.bits(jax.random.key(3), (2, 1000), jnp.uint32)
    key = jnp.array([0x12345678, 0x9ABCDEF0], jnp.uint32)
    expected = jax.extend.random.threefry_2x32(key, counts.ravel()).reshape(2, 1000)
    np.testing.assert_array_equal(np.stack(jax.jit(threefry2x32)(key[0], key[1], *counts)), expected)


@pytest.mark.parametrize("shape", [(3, 50, 37), (5551,)])  # last axes not multiples of the integers per block
@pytest.mark.parametrize("bits", [8, 16, 32])
def test_random_uints_are_uniform_in_every_bit_and_differ_everywhere(bits, shape):
    values = np.asarray(random_uints(jax.random.key(0), shape, bits), np.uint64)
    assert values.shape == shape and values.max() < 2**bits
    ones = np.stack([(values >> b) & 1 for b in range(bits)]).reshape(bits, -1).mean(axis=1)
    assert np.all(np.abs(ones - 0.5) < 4 * np.sqrt(0.25 / values.size)), ones
    if bits == 32:  # ~5550 draws from 2**32: any repeat would mean two elements share a counter
        assert len(np.unique(values)) == values.size
    np.testing.assert_array_equal(random_uints(jax.random.key(0), shape, bits), values)


def test_random_uints_refuse_a_width_they_cannot_make():
    with pytest.raises(ValueError, match="random integers of 12 bits: the widths are 8, 16 and 32"):
        random_uints(jax.random.key(0), (4, 4), 12)


def test_each_dropout_mask_is_hashed_once_for_forward_and_backward():
    # Left to fusion, XLA copies the 20-round hash into every consumer of a mask (the forward product and
    # the backward one, on either side of a matmul): twice the work and the compile time. Masks are stored.
    def loss(w, x, rng):
        for index in range(3):
            x = Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.fold_in(rng, index)}) @ w
        return jnp.sum(x)

    w, x = jnp.ones((32, 32)), jnp.ones((4, 8, 32))
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w, x, jax.random.key(0)).compile().as_text()
    hashes = [part.count(" shift-left(") for part in hlo.split("\n\n")]  # 20 rounds, one shift-left each
    assert sum(count for count in hashes if count >= 20) == 3 * 20


def test_dropout_is_identity_when_deterministic_and_zero_at_rate_one():
    x = jnp.arange(12.0).reshape(3, 4)
    rngs = {"dropout": jax.random.key(0)}
    np.testing.assert_array_equal(Dropout(0.5).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs), 0 * x)


@pytest.mark.parametrize("family, drops_inside", [(bert, False), (t5, True)])
def test_ffn_hidden_dropout_only_where_the_family_has_it(family, drops_inside):
    # The FFN has no other dropout: with it off, training mode computes exactly the eval output.
    cfg = family(hidden_size=16, num_heads=2, mlp_dim=64, dropout_rate=0.5).model
    x = jax.random.normal(jax.random.key(0), (2, 8, 16))
    ffn = FeedForward(cfg)
    params = ffn.init(jax.random.key(1), x)
    train = ffn.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert cfg.ffn_dropout == drops_inside
    assert np.allclose(train, ffn.apply(params, x)) != drops_inside


@pytest.mark.parametrize("override, message", [
    ("runtime.dropout_bits=12", "runtime.dropout_bits=12 is not one of 8, 16, 32"),
    ("model.dropout_rate=1.5", r"model.dropout_rate=1.5 is not a dropout rate: it must be in \[0, 1\)"),
    ("model.attention_dropout_rate=-0.1", "model.attention_dropout_rate=-0.1 is not a dropout rate"),
])
def test_bad_dropout_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/bert_tiny.py", [override])


def test_a_rate_the_masks_cannot_express_is_refused():
    with pytest.raises(ConfigError, match="model.dropout_rate=0.001 rounds to 0 with runtime.dropout_bits=8"):
        load_config("configs/bert_tiny.py", ["runtime.dropout_bits=8", "model.dropout_rate=0.001"])
    assert load_config("configs/bert_tiny.py", ["model.dropout_rate=0.001"]).model.dropout_rate == 0.001
