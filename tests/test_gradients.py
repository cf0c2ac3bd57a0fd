"""Gradient-structure helpers: the same gradients as plain autodiff, in the shapes XLA:CPU runs fast.

materialize_gradient: a backward pass whose fused kernels do not grow with depth, its stored copy
bit-exact. contract_last: kernel gradients computed in the kernel's own layout. attend: a tied head's
table gradient without a transposed copy of the logits' gradient.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import gpt, t5
from plmjax.layers.block import TransformerStack
from plmjax.config import RuntimeConfig
from plmjax.layers import runtime
from plmjax.layers.gradients import materialize_gradient, stored_p
from plmjax.layers.linear import attend, attend_plain, contract_last, contract_last_plain
from plmjax.models.task import make_model_task
from test_sharding import SMALL, seq2seq_batch

FUSED_COMPUTATION = re.compile(r"^%?(fused_computation[\w.\-]*) .*\{$")


def _stack_and_loss(num_layers: int, materialize: bool, kernel_grads_in_layout: bool = True):
    cfg = gpt(hidden_size=32, num_layers=num_layers, num_heads=2, mlp_dim=64, dropout_rate=0.0,
              attention_dropout_rate=0.0).model
    settings = RuntimeConfig(materialize_layer_grads=materialize, kernel_grads_in_layout=kernel_grads_in_layout)
    stack = TransformerStack(cfg, num_layers, causal=True)
    x = jax.random.normal(jax.random.key(0), (2, 16, 32))
    params = stack.init(jax.random.key(1), x)

    def loss(params, x):
        with runtime.use(settings):  # read while the loss is traced
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
    # The stored copy is exact (below), but a bias gradient summed from it may add its 32 terms (up to ~7)
    # in another order than one summed from the fused chain it replaces: float32 rounding, ~1e-6.
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-5), grads, plain)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.uint32])
def test_the_stored_copy_keeps_every_bit(dtype):  # -0.0, infinities, a NaN payload, a subnormal
    bits = np.array([0x3FC00000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC12345, 0x00000001], np.uint32)
    x = jax.lax.bitcast_convert_type(jnp.asarray(bits), jnp.float32).astype(dtype) if dtype != jnp.uint32 \
        else jnp.asarray(bits)
    stored = jax.jit(stored_p.bind)(x)
    assert stored.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(stored).view(np.uint8), np.asarray(x).view(np.uint8))


def test_materialized_gradient_has_the_derivatives_of_the_identity():  # gradient, per example, second order
    assert_same_derivatives(lambda x, w: materialize_gradient(x * w), lambda x, w: x * w, (2, 5, 6), (6,))


def test_layer_gradients_are_stored_through_their_bits():
    """XLA:CPU hands a float sum with zeros to YNNPACK (7 ms for one of GPT-2 small's layer gradients); the
    same sum over the bits as unsigned integers stays in XLA's kernel with the gradient's producers."""
    loss, params, x = _stack_and_loss(3, materialize=True)
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
    pairs = re.findall(r"([a-z]+\d+)\[2,2,16,32\]", text)  # a layer gradient [2, 16, 32] beside its zeros
    assert pairs and set(pairs) == {"u32"}, pairs


@pytest.mark.parametrize("materialize", [True, False])
def test_pre_norm_backward_kernels_grow_with_depth_only_without_materialized_gradients(materialize):
    shallow, deep = _largest_fused_kernel(4, materialize), _largest_fused_kernel(8, materialize)
    if materialize:
        assert deep <= shallow + 5, (shallow, deep)
    else:  # XLA:CPU recomputes the residual-gradient chain of all later layers in each kernel (should a
        # newer XLA stop doing so, this fails: materialize_gradient is then no longer needed)
        assert deep > shallow + 50, (shallow, deep)


def test_forward_mode_differentiation_still_works():  # with plain autodiff for the projections' kernels
    loss, params, x = _stack_and_loss(2, materialize=True, kernel_grads_in_layout=False)
    plain_loss, _, _ = _stack_and_loss(2, materialize=False, kernel_grads_in_layout=False)
    direction = jax.random.normal(jax.random.key(2), x.shape)
    _, tangent = jax.jvp(lambda x: loss(params, x), (x,), (direction,))
    _, plain = jax.jvp(lambda x: plain_loss(params, x), (x,), (direction,))
    np.testing.assert_array_equal(tangent, plain)


PROJECTIONS = {"embed->heads,kv": ((2, 5, 6), (6, 3, 4), 1), "heads,kv->embed": ((2, 5, 3, 4), (3, 4, 6), 2)}


def assert_same_derivatives(product, plain, x_shape, w_shape):
    """Gradients, per-example gradients and a gradient penalty of sum(sin(product(x, w))) equal plain's."""
    x, w = jax.random.normal(jax.random.key(0), x_shape), jax.random.normal(jax.random.key(1), w_shape)

    def check(derivative):
        loss = [lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))) for f in (product, plain)]
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), *map(derivative, loss))

    check(lambda f: jax.jit(jax.grad(f, (0, 1)))(x, w))
    check(lambda f: jax.vmap(jax.grad(lambda x, w: f(x[None], w), 1), (0, None))(x, w))  # per example
    check(lambda f: jax.grad(lambda w: jnp.sum(jax.grad(f, 0)(x, w) ** 2))(w))  # a gradient penalty


@pytest.mark.parametrize("x_shape,kernel_shape,n_in", PROJECTIONS.values(), ids=PROJECTIONS)
def test_kernel_gradients_in_layout_equal_autodiff_per_example_and_second_order(x_shape, kernel_shape, n_in):
    assert_same_derivatives(lambda x, k: contract_last(x, k, n_in), lambda x, k: contract_last_plain(x, k, n_in),
                            x_shape, kernel_shape)


def test_projection_of_an_unbatched_input_has_the_same_gradients():  # no rows to flatten
    x, kernel = jnp.arange(6.0), jnp.arange(24.0).reshape(6, 4) / 24
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k, 1))), (0, 1))(x, kernel)
             for f in (contract_last, contract_last_plain)]
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), *grads)


def _compiled_gradient_dots(product, w_shape) -> tuple[set[tuple[str, str, str]], bool]:
    """Both gradients of sum(sin(product(x, w))) for x of [8, 16, 24] (128 rows of 24), compiled: (shape, lhs
    and rhs contracting dims) of each 2-D dot, and whether any operand is transposed or copied into memory."""
    x, w = jnp.ones((8, 16, 24)), jnp.ones(w_shape)
    text = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(product(x, w))), (0, 1))).lower(x, w).compile().as_text()
    dots = set(re.findall(r"= f32\[(\d+,\d+)\]\{1,0\} dot\(.*lhs_contracting_dims=\{(\d+)\}, "
                          r"rhs_contracting_dims=\{(\d+)\}", text))
    return dots, bool(re.search(r" (copy|transpose)\(", text))


def test_attend_gradients_equal_autodiff_and_the_table_gradient_reads_the_cotangent_in_place():
    assert_same_derivatives(attend, attend_plain, (2, 5, 6), (7, 6))
    dots, moved = _compiled_gradient_dots(attend, (40, 24))  # a table of 40 rows
    # scores [tokens, rows]; input gradient [tokens, 24]; table gradient: the cotangent's rows against x's
    assert dots == {("128,40", "1", "1"), ("128,24", "1", "0"), ("40,24", "0", "0")} and not moved, dots
    dots, moved = _compiled_gradient_dots(attend_plain, (40, 24))
    assert ("40,24", "0", "0") not in dots and moved, dots  # JAX's own rule transposes the cotangent first


def test_projection_gradients_are_dots_reading_their_operands_in_place_the_kernel_one_in_its_layout():
    project = functools.partial(contract_last, n_in=1)  # out 4 x 8 = 32
    dots, moved = _compiled_gradient_dots(project, (24, 4, 8))
    # forward [tokens, out]; input gradient [tokens, in] against the kernel's rows; kernel gradient [in, out]
    # contracting x's rows: no operand transposed into memory
    assert dots == {("128,32", "1", "0"), ("128,24", "1", "1"), ("24,32", "0", "0")} and not moved, dots
    # JAX's own rule puts the cotangent first: an [out, in] product, and transposed copies
    dots, moved = _compiled_gradient_dots(functools.partial(contract_last_plain, n_in=1), (24, 4, 8))
    assert "32,24" in {shape for shape, _, _ in dots} and moved


@pytest.mark.parametrize("variant", [{}, {"scan_layers": True, "remat": "full"}], ids=["unrolled", "scanned_remat"])
def test_t5_train_gradients_with_kernels_in_layout_equal_plain_autodiff(variant):
    """Dropout (also inside the FFN), tied embeddings, cross attention: every projection kind of a train step."""
    batch, model = seq2seq_batch(np.random.default_rng(0)), dict(SMALL, dropout_rate=0.1, **variant)
    task = make_model_task(t5(**model))
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch)["params"])

    def grads(in_layout: bool):
        def loss(p):
            with runtime.use(RuntimeConfig(kernel_grads_in_layout=in_layout)):
                return task.loss(p, batch, jax.random.key(1), train=True)[0]

        return jax.jit(jax.grad(loss))(params)

    grads = [grads(True), grads(False)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *grads)
    assert all(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(grads[0]))
