"""Sharded training equals one device, and parameters are split the way the rules table says."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from plmjax import partitioning
from plmjax.config import MeshConfig, bert, deberta, electra, gpt, t5
from plmjax.models.task import make_model_task
from plmjax.objectives.mlm import mask_tokens
from plmjax.training import state as state_lib
from plmjax.training.optimizer import make_optimizer
from plmjax.training.trainer import make_train_step

SMALL = dict(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, head_dim=8, mlp_dim=64, max_length=32,
             dropout_rate=0.0, attention_dropout_rate=0.0)
BATCH, LENGTH = 8, 16


def mlm_batch(rng):
    ids = rng.integers(5, SMALL["vocab_size"], (BATCH, LENGTH)).astype(np.int32)
    ids[:, 0] = 2
    batch = mask_tokens(ids, rng, mask_rate=0.15, max_predictions=4, mask_id=4,
                        vocab_size=SMALL["vocab_size"], special_ids={0, 1, 2, 3, 4})
    batch["segment_ids"] = np.zeros_like(ids)
    batch["attention_mask"] = np.ones_like(ids)
    batch["nsp_labels"] = rng.integers(0, 2, BATCH).astype(np.int32)
    return batch


def seq2seq_batch(rng):
    ids = lambda n: rng.integers(1, SMALL["vocab_size"], (BATCH, n)).astype(np.int32)  # noqa: E731
    return {"encoder_input_ids": ids(LENGTH), "decoder_input_ids": ids(6), "decoder_target_ids": ids(6),
            "decoder_weights": np.ones((BATCH, 6), np.float32)}


def causal_batch(rng):
    ids = rng.integers(1, SMALL["vocab_size"], (BATCH, LENGTH + 1)).astype(np.int32)
    return {"input_ids": ids[:, :-1], "target_ids": ids[:, 1:], "weights": np.ones((BATCH, LENGTH), np.float32)}


FAMILIES = {"bert": (bert, mlm_batch), "t5": (t5, seq2seq_batch), "gpt": (gpt, causal_batch)}


def _sharded(config, batch, mesh):
    """(model task, optimizer, state shardings, initial state, the batch on the mesh)."""
    task = make_model_task(config)
    optimizer = make_optimizer(config.optimizer, config.train.num_steps)
    _, shardings = state_lib.state_shardings(task, optimizer, mesh, batch)
    state = state_lib.init_state(task, optimizer, batch, shardings, seed=0)
    return task, optimizer, shardings, state, {k: jax.device_put(v, partitioning.batch_sharding(mesh))
                                                for k, v in batch.items()}


def loss_and_grads(config, batch, mesh):
    """((loss, grads) on the host, the model task, optimizer, shardings, initial state and batch) on `mesh`."""
    task, optimizer, shardings, state, sharded_batch = _sharded(config, batch, mesh)
    with jax.set_mesh(mesh), partitioning.axis_rules():
        value = jax.jit(jax.value_and_grad(lambda p, b: task.loss(p, b)[0]))(state.params, sharded_batch)
    return jax.device_get(value), (task, optimizer, shardings, state, sharded_batch)


def loss_grads_and_step(config, batch, mesh):
    """(loss, grads, params after two train steps) computed on `mesh`."""
    (loss, grads), (task, optimizer, shardings, state, sharded_batch) = loss_and_grads(config, batch, mesh)
    with jax.set_mesh(mesh), partitioning.axis_rules():
        step = make_train_step(task, config, optimizer, shardings, mesh)
        for _ in range(2):
            state, _ = step(state, sharded_batch)
    return loss, grads, jax.device_get(state.params), state


def assert_trees_close(actual, expected, rtol):
    """Per leaf, ||a - b|| / ||b|| <= rtol; a leaf that is ~0 in truth (key-bias gradients, which
    the softmax cancels) is measured against a thousandth of the whole tree's norm instead."""
    floor = 1e-3 * np.sqrt(sum(np.sum(np.square(b)) for b in jax.tree.leaves(expected)))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        error = np.linalg.norm(a - b) / max(np.linalg.norm(b), floor)
        assert error <= rtol, f"{jax.tree_util.keystr(path)}: relative error {error:.2e}"


def small_config_and_batch(family: str):
    """The family's SMALL model set to train 10 steps, and its batch."""
    make_config, make_batch = FAMILIES[family]
    config = make_config(**SMALL)
    config.train.num_steps = 10
    return config, make_batch(np.random.default_rng(0))


@functools.cache
def single_device_result(family: str):
    """loss_grads_and_step of the family's SMALL model on one device, computed once for all mesh shapes."""
    single = partitioning.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
    return loss_grads_and_step(*small_config_and_batch(family), single)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("data,model", [(8, 1), (4, 2), (2, 4)])
def test_sharded_equals_single_device(family, data, model):
    sharded = partitioning.make_mesh(MeshConfig(data=data, model=model))
    loss_1, grads_1, params_1, _ = single_device_result(family)
    loss_n, grads_n, params_n, state_n = loss_grads_and_step(*small_config_and_batch(family), sharded)
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    assert_trees_close(grads_n, grads_1, rtol=1e-5)
    assert_trees_close(params_n, params_1, rtol=1e-5)
    # The rules table really splits the weights (and their Adam moments): mlp and vocab over `model`.
    leaves = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(state_n.params)}
    wo = next(v for k, v in leaves.items() if "layers_0']['mlp']['wo']['kernel" in k)
    assert wo.sharding.spec == P("model", None)
    assert wo.addressable_shards[0].data.shape == (SMALL["mlp_dim"] // model, SMALL["hidden_size"])
    table = next(v for k, v in leaves.items() if "['token']['embedding']" in k)
    assert table.addressable_shards[0].data.shape == (SMALL["vocab_size"] // model, SMALL["hidden_size"])
    moments = [x for x in jax.tree.leaves(state_n.opt_state) if x.shape == wo.shape]
    assert moments and all(x.sharding.spec == P("model", None) for x in moments)


def test_electra_generator_and_discriminator_on_a_mesh_equal_one_device():
    # Both networks, the shared embeddings and the generator's samples (drawn on sharded logits) agree.
    config = electra(**SMALL)
    config.objective.replaced_token_detection.generator_hidden_size = 16
    config.objective.replaced_token_detection.generator_num_heads = 2
    config.train.num_steps = 10
    batch = mlm_batch(np.random.default_rng(0))
    del batch["nsp_labels"]
    single = partitioning.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
    (loss_1, grads_1), _ = loss_and_grads(config, batch, single)
    (loss_n, grads_n), (*_, state_n, _) = loss_and_grads(config, batch, partitioning.make_mesh(MeshConfig(data=4, model=2)))
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    assert_trees_close(grads_n, grads_1, rtol=1e-5)
    assert np.linalg.norm(grads_1["generator"]["stack"]["layers_0"]["mlp"]["wi"]["kernel"]) > 0
    wi = state_n.params["generator"]["stack"]["layers_0"]["mlp"]["wi"]["kernel"]
    assert wi.sharding.spec == P(None, "model") and wi.addressable_shards[0].data.shape == (16, 64 // 2)


def test_disentangled_attention_on_a_mesh_equals_one_device():
    # DeBERTa's c2p and p2c gathers over bucketed relative positions with heads split over `model`, its own position
    # projections, the first layer's convolution and the mask decoder's reruns of the last layer.
    config = deberta(**SMALL, position_buckets=8, share_position_keys=False, conv_kernel_size=3,
                     position_kind="learned", position_input=False, mask_decoder_passes=2)
    config.objective.kind = "mlm"
    batch = mlm_batch(np.random.default_rng(0))
    single = partitioning.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
    (loss_1, grads_1), _ = loss_and_grads(config, batch, single)
    (loss_n, grads_n), (*_, state_n, _) = loss_and_grads(config, batch, partitioning.make_mesh(MeshConfig(data=4, model=2)))
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    assert_trees_close(grads_n, grads_1, rtol=1e-5)
    kernel = grads_1["encoder"]["stack"]["layers_1"]["self_attention"]["kernel"]
    assert np.linalg.norm(kernel["position_key"]["kernel"]) > 0 and np.linalg.norm(kernel["position_query"]["kernel"]) > 0
    key = state_n.params["encoder"]["stack"]["layers_0"]["self_attention"]["kernel"]["position_key"]["kernel"]
    assert key.sharding.spec == P(None, "model", None) and key.addressable_shards[0].data.shape == (32, 2, 8)


def test_sharded_dropout_equals_single_device():
    # Dropout's random bits are counted along the activation's own axes; split over the mesh they must
    # still give every element the mask one device gives it: two training steps with dropout agree.
    config = gpt(**dict(SMALL, dropout_rate=0.1, attention_dropout_rate=0.1))
    config.train.num_steps = 10
    batch = causal_batch(np.random.default_rng(0))
    single = partitioning.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
    _, _, params_1, _ = loss_grads_and_step(config, batch, single)
    _, _, params_n, _ = loss_grads_and_step(config, batch, partitioning.make_mesh(MeshConfig(data=2, model=4)))
    assert_trees_close(params_n, params_1, rtol=1e-5)
    _, _, undropped, _ = loss_grads_and_step(gpt(**SMALL), batch, single)
    with pytest.raises(AssertionError):  # and the dropout really changed the steps
        assert_trees_close(undropped, params_1, rtol=1e-3)


def test_mesh_shape_resolves_minus_one_and_rejects_bad_shapes():
    assert partitioning.mesh_shape(MeshConfig(data=-1, model=2), 8) == (4, 1, 2)
    assert partitioning.mesh_shape(MeshConfig(data=2, expert=-1, model=1), 8) == (2, 4, 1)
    assert partitioning.mesh_shape(MeshConfig(data=1, model=2), 8) == (1, 1, 2)
    assert partitioning.make_mesh(MeshConfig(data=1, model=2)).devices.size == 2
    with pytest.raises(ValueError, match="needs 16 devices but 8"):
        partitioning.mesh_shape(MeshConfig(data=4, model=4), 8)
    with pytest.raises(ValueError, match="do not divide 8 devices"):
        partitioning.mesh_shape(MeshConfig(data=-1, model=3), 8)
    with pytest.raises(ValueError, match="at most one mesh axis"):
        partitioning.mesh_shape(MeshConfig(data=-1, model=-1), 8)
