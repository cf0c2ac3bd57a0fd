"""Narrow-bit dropout: the rate (rounded to 2**-bits), the kept mean and independent masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import ConfigError, bert, load_config, t5
from plmjax.layers.dropout import Dropout, keep_mask


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


def test_dropout_is_identity_when_deterministic_and_zero_at_rate_one():
    x = jnp.arange(12.0).reshape(3, 4)
    rngs = {"dropout": jax.random.key(0)}
    np.testing.assert_array_equal(Dropout(0.5).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs), 0 * x)


def test_dropout_bits_and_ffn_dropout_are_config_fields():
    assert t5().model.ffn_dropout and not bert().model.ffn_dropout
    with pytest.raises(ConfigError, match="model.dropout_bits=12 is not one of 8, 16, 32"):
        load_config("configs/bert_tiny.py", ["model.dropout_bits=12"])
