"""materialize_gradient: the same gradients, and a backward pass whose fused kernels do not grow with depth."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import gpt
from plmjax.layers.block import TransformerStack

FUSED_COMPUTATION = re.compile(r"^%?(fused_computation[\w.\-]*) .*\{$")


def _stack_and_loss(num_layers: int, materialize: bool):
    cfg = gpt(hidden_size=32, num_layers=num_layers, num_heads=2, mlp_dim=64, dropout_rate=0.0,
              attention_dropout_rate=0.0).model
    stack = TransformerStack(dataclasses.replace(cfg, materialize_layer_grads=materialize), num_layers, causal=True)
    x = jax.random.normal(jax.random.key(0), (2, 16, 32))
    params = stack.init(jax.random.key(1), x)

    def loss(params, x):
        return jnp.sum(jnp.sin(stack.apply(params, x)))

    return loss, params, x


def _largest_fused_kernel(num_layers: int, materialize: bool) -> int:
    """Instructions in the biggest fused computation of the compiled backward pass."""
    loss, params, x = _stack_and_loss(num_layers, materialize)
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
    sizes, current = {}, None
    for line in text.splitlines():
        match = FUSED_COMPUTATION.match(line)
        if match:
            current, sizes[match.group(1)] = match.group(1), 0
        elif line.startswith("}"):
            current = None
        elif current:
            sizes[current] += 1
    return max(sizes.values())


def test_materialized_layer_gradients_are_the_same_gradients():
    loss, params, x = _stack_and_loss(3, materialize=True)
    plain_loss, _, _ = _stack_and_loss(3, materialize=False)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    plain = jax.jit(jax.grad(plain_loss, argnums=(0, 1)))(params, x)
    jax.tree.map(np.testing.assert_array_equal, grads, plain)  # adding zero is exact


@pytest.mark.parametrize("materialize", [True, False])
def test_pre_norm_backward_kernels_grow_with_depth_only_without_materialized_gradients(materialize):
    shallow, deep = _largest_fused_kernel(4, materialize), _largest_fused_kernel(8, materialize)
    if materialize:
        assert deep <= shallow + 5, (shallow, deep)
    else:  # XLA:CPU recomputes the residual-gradient chain of all later layers in each kernel (should a
        # newer XLA stop doing so, this fails: materialize_gradient is then no longer needed)
        assert deep > shallow + 50, (shallow, deep)


def test_forward_mode_differentiation_still_works():
    loss, params, x = _stack_and_loss(2, materialize=True)
    plain_loss, _, _ = _stack_and_loss(2, materialize=False)
    direction = jax.random.normal(jax.random.key(2), x.shape)
    _, tangent = jax.jvp(lambda x: loss(params, x), (x,), (direction,))
    _, plain = jax.jvp(lambda x: plain_loss(params, x), (x,), (direction,))
    np.testing.assert_array_equal(tangent, plain)
