"""The extension seams, proven by the plug-ins in tests/plugins/: each is one file that touches no plmjax file.

parity.py (an objective), norm_scales.py (a trainable mask), clipped.py (a gradient function and a
transform), alibi.py (an attention kernel that needs positions), entropy.py (a regularizer reading sown
attention weights) and summary_carry.py (a layer carry).
"""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plmjax import aot, partitioning, plugins
from plmjax.cli import main
from plmjax.config import ConfigError, apply_overrides, bert, gpt, load_config, to_dict
from plmjax.convert import directory
from plmjax.data import pipeline, sources
from plmjax.layers.attention import ATTENTION_WEIGHTS, AttentionInputs
from plmjax.layers.block import TransformerLayer, TransformerStack, attention_bias
from plmjax.models.decoder import DecoderLM
from plmjax.models.encoder import Encoder
from plmjax.models.task import make_model_task
from plmjax.training import state as state_lib
from plmjax.training import step as step_lib
from plmjax.training.checkpoints import CheckpointMismatchError
from plmjax.training.optimizer import make_optimizer
from plmjax.training.trainable import leaves
from plmjax.training.trainer import Trainer, make_train_step
from test_decoding import _random_params, _uncached_greedy

HERE = os.path.dirname(os.path.abspath(__file__))
BERT_TINY = os.path.join(HERE, "..", "configs", "bert_tiny.py")


def plugin(name: str) -> str:
    return os.path.join(HERE, "plugins", f"{name}.py")


@pytest.fixture(scope="module", autouse=True)
def loaded_plugins():
    """Every plug-in registered once, when this module's tests start (registrations last for the session)."""
    for name in ("parity", "norm_scales", "clipped", "alibi", "entropy", "summary_carry"):
        plugins.load(plugin(name))


TINY = ["model.num_layers=1", "data.seq_length=32", "data.batch_size=8", "train.eval_steps=1", "train.log_every=1",
        "mesh.data=1", "objective.mlm.max_predictions=5"]


def tiny_config(*overrides, plugin_names=()):
    return load_config(BERT_TINY, [*TINY, *overrides], [plugin(name) for name in plugin_names])


def cli(verb, workdir, *overrides, extra=()):
    args = [verb, "--workdir", str(workdir)]
    if verb == "train":
        args += ["--config", BERT_TINY, "--no-progress"]
    for override in overrides:
        args += ["--set", override]
    return main(args + list(extra))


# ---------------------------------------------------------------- an objective: parity.py


PARITY = ["objective.kind=parity", "objective.parity.modulus=3", "optimizer.schedule=constant", *TINY]


def test_a_new_objective_trains_resumes_and_evaluates_through_the_cli(tmp_path, capsys):
    with_plugin = ["--plugin", plugin("parity")]
    assert cli("train", tmp_path / "straight", *PARITY, "train.num_steps=4", extra=with_plugin) == 0
    straight = capsys.readouterr().out
    assert cli("train", tmp_path / "resumed", *PARITY, "train.num_steps=2", extra=with_plugin) == 0
    assert cli("train", tmp_path / "resumed", *PARITY, "train.num_steps=4", extra=with_plugin) == 0
    resumed = capsys.readouterr().out.splitlines()[-1]
    assert resumed == straight.splitlines()[-1] and "eval step 4: accuracy=" in resumed  # resume == uninterrupted
    logged = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    steps = [record["step"] for record in logged if "loss" in record]
    assert steps == [1, 2, 3, 4]
    recorded = json.load(open(tmp_path / "resumed" / "config.json"))
    assert recorded["plugins"] == [plugin("parity")] and recorded["objective"]["parity"] == {"modulus": 3}
    assert main(["eval", "--workdir", str(tmp_path / "resumed")]) == 0  # no --plugin: config.json names it
    evaluated = capsys.readouterr().out
    accuracy = float(resumed.split("accuracy=")[1].split()[0])
    assert re.search(rf"accuracy\s+{accuracy:.4f}", evaluated), evaluated


def test_a_new_objective_has_its_keys_features_and_seqio_tasks(tmp_path):
    config = tiny_config(*PARITY[:2], plugin_names=("parity",))
    assert config.objective.parity.modulus == 3
    with pytest.raises(ConfigError, match=r"unknown config key 'objective.parity.bogus'(.|\n)*objective.parity.modulus"):
        apply_overrides(config, ["objective.parity.bogus=1"])
    with pytest.raises(ConfigError, match="objective.parity.modulus expects int, got 'three'"):
        apply_overrides(config, ["objective.parity.modulus=three"])
    with pytest.raises(ConfigError, match=r"objective.parity.modulus=1 must be in \[2, model.vocab_size="):
        apply_overrides(config, ["objective.parity.modulus=1"])  # the objective's own check, as the config is read
    with pytest.raises(ConfigError, match="model.arch='decoder' cannot train objective.kind='parity'"):
        make_model_task(apply_overrides(config, ["model.arch=decoder"]))
    tokenizer = sources.build_vocabulary(config, str(tmp_path))
    batch = pipeline.make_source(config, tokenizer, "train").batch(0)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, s in aot.batch_spec(config).items()}  # what `plmjax compile` lowers
    np.testing.assert_array_equal(batch["parity_labels"], batch["input_ids"] % 3)
    seqio_config = apply_overrides(config, ["data.mixture=pydoc_parity"])
    rows = sources.make_source(seqio_config, sources.build_vocabulary(seqio_config, str(tmp_path)), "train").batch(0)
    assert rows["input_ids"].shape == (8, 32) and np.all(rows["parity_labels"] == rows["input_ids"] % 3)


def test_plugins_recorded_in_config_json_are_loaded_by_a_fresh_process(tmp_path):
    config = tiny_config(*PARITY[:2], plugin_names=("parity",))
    (tmp_path / "config.json").write_text(json.dumps(to_dict(config)))
    code = ("import sys; from plmjax.convert import directory; "
            "c = directory.read_config(sys.argv[1]); print(c.objective.kind, c.objective.parity.modulus)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["parity", "3"]


# ---------------------------------------------------------------- a trainable mask: norm_scales.py


def _train(config, workdir):
    trainer = Trainer(config, str(workdir), progress=False)
    try:
        final = trainer.run()
    finally:
        trainer.close()
    return trainer, final


def _size(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_a_trainable_mask_freezes_the_rest_and_checkpoints_only_what_trains(tmp_path, capsys):
    base, _ = _train(tiny_config("train.num_steps=2"), tmp_path / "base")
    config = tiny_config("train.num_steps=3", f"train.init_from={tmp_path / 'base'}", "train.trainable=norm_scales",
                         "optimizer.learning_rate=0.01")
    tuned, final = _train(config, tmp_path / "tuned")
    start, _ = directory.restore_params(str(tmp_path / "base"), base.abstract_state.params)
    scales = 0
    for path, leaf in leaves(tuned.state.params).items():
        before = np.asarray(leaves(start)[path])
        if path[-1] == "scale":
            scales += leaf.size
            assert np.abs(np.asarray(leaf) - before).max() > 1e-4, path
        else:
            np.testing.assert_array_equal(np.asarray(leaf), before, err_msg="/".join(path))
    moments = [x for x in jax.tree.leaves(tuned.state.opt_state) if x.ndim]
    assert sum(x.size for x in moments) == 2 * scales  # Adam's mu and nu of the scales alone
    assert _size(tmp_path / "tuned" / "checkpoints" / "3") * 20 < _size(tmp_path / "base" / "checkpoints" / "2")

    again = Trainer(config, str(tmp_path / "tuned"), progress=False)
    jax.tree.map(np.testing.assert_array_equal, again.restore_params(), tuned.state.params)  # base + trainable
    again.close()
    jax.tree.map(np.testing.assert_array_equal, directory.load(str(tmp_path / "tuned")).params,
                 jax.device_get(tuned.state.params))  # what decode, embed and convert --to hf read
    capsys.readouterr()
    assert main(["eval", "--workdir", str(tmp_path / "tuned")]) == 0
    assert re.search(rf"mlm_loss\s+{final['mlm_loss']:.4f}", capsys.readouterr().out)

    _train(tiny_config("train.num_steps=1", "train.seed=1"), tmp_path / "other")
    other = apply_overrides(config, [f"train.init_from={tmp_path / 'other'}"])
    wrong = Trainer(other, str(tmp_path / "tuned"), progress=False)
    with pytest.raises(CheckpointMismatchError, match="holds only the trainable parameters and was trained on "
                                                       "another base: init_from .*base"):
        wrong.initial_state()
    wrong.close()
    with pytest.raises(ConfigError, match="train.trainable item 'no_such_module' matches no parameter"):
        Trainer(apply_overrides(config, ["train.trainable=no_such_module"]), str(tmp_path / "x"), progress=False)


# ---------------------------------------------------------------- a gradient function and a transform: clipped.py


@pytest.fixture(scope="module")
def step_setup(tmp_path_factory):
    """A tiny MLM config, its task, one batch, optimizer, shardings and a fresh state (dropout on)."""
    config = tiny_config("optimizer.clip_grad_norm=0.5")
    tokenizer = sources.build_vocabulary(config, str(tmp_path_factory.mktemp("vocab")))
    batch = pipeline.make_source(config, tokenizer, "train").batch(0)
    task = make_model_task(config)
    optimizer = make_optimizer(config.optimizer, config.train.num_steps)
    mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
    _, shardings = state_lib.state_shardings(task, optimizer, mesh, batch)
    return config, task, batch, optimizer, shardings, mesh


def _steps(config, task, batch, optimizer, shardings, mesh, parts=None, steps=2):
    state = state_lib.init_state(task, optimizer, batch, shardings, config.train.seed)
    step = make_train_step(task, config, optimizer, shardings, mesh, parts)
    for _ in range(steps):
        state, metrics = step(state, batch)
    return state, metrics


def test_with_the_identity_transform_the_step_is_todays_exactly(step_setup):
    config, task, batch, optimizer, shardings, mesh = step_setup
    state, metrics = _steps(*step_setup)
    # The step as it was: value_and_grad of the loss, then optax's chain of global-norm clipping and AdamW.
    chain = optax.chain(optax.clip_by_global_norm(0.5), optimizer)
    params = state_lib.init_state(task, optimizer, batch, shardings, config.train.seed).params

    @jax.jit
    def reference(params, opt_state, step):
        rng = jax.random.fold_in(jax.random.key(config.train.seed), step)
        (_, ref_metrics), grads = jax.value_and_grad(lambda p: task.loss(p, batch, rng, train=True), has_aux=True)(params)
        updates, opt_state = chain.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, ref_metrics

    opt_state = chain.init(params)
    for i in range(2):
        params, opt_state, ref_metrics = reference(params, opt_state, i)
    jax.tree.map(np.testing.assert_array_equal, state.params, params)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state, opt_state[1])
    assert float(metrics["loss"]) == float(ref_metrics["loss"])
    scaled, _ = _steps(*step_setup, parts=step_lib.parts_from_config(apply_overrides(
        config, ["train.grad_transform=scale", "train.scale.factor=1.0"])))
    jax.tree.map(np.testing.assert_array_equal, scaled.params, state.params)


def test_a_transform_runs_before_the_optimizer(step_setup):
    config, task, batch, optimizer, shardings, mesh = step_setup
    zeroed = apply_overrides(config, ["train.grad_transform=scale", "train.scale.factor=0.0",
                                      "optimizer.clip_grad_norm=0.0", "optimizer.schedule=constant",
                                      "optimizer.warmup_steps=0"])
    opt = make_optimizer(zeroed.optimizer, zeroed.train.num_steps)
    state, _ = _steps(zeroed, task, batch, opt, shardings, mesh, step_lib.parts_from_config(zeroed), steps=1)
    start = state_lib.init_state(task, opt, batch, shardings, config.train.seed).params
    decay = 1 - zeroed.optimizer.learning_rate * zeroed.optimizer.weight_decay
    for path, leaf in leaves(state.params).items():  # zero gradients: AdamW only decays the weights
        expected = leaves(start)[path] * (1.0 if path[-1] in ("bias", "scale") else decay)
        np.testing.assert_allclose(leaf, expected, rtol=1e-6, err_msg="/".join(path))


def test_a_per_example_gradient_function_matches_a_loop_over_examples(step_setup):
    config, task, batch, optimizer, shardings, mesh = step_setup
    clipped = apply_overrides(config, ["train.gradient=per_example_clip", "train.per_example_clip.max_norm=0.3"])
    params = state_lib.init_state(task, optimizer, batch, shardings, config.train.seed).params
    loss_fn = lambda p, b, r: task.loss(p, b, r, train=False)  # noqa: E731
    grads, _ = jax.jit(lambda p: step_lib.GRADIENTS["per_example_clip"](clipped)(loss_fn, p, batch, None))(params)
    single = jax.jit(jax.grad(lambda p, row: loss_fn(p, row, None)[0]))
    expected = None
    for i in range(len(batch["input_ids"])):
        g = single(params, {k: v[i:i + 1] for k, v in batch.items()})
        norm = float(optax.tree.norm(g))
        assert norm > 0.3  # every example is clipped
        g = jax.tree.map(lambda x: x * 0.3 / norm / len(batch["input_ids"]), g)
        expected = g if expected is None else jax.tree.map(jnp.add, expected, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7), grads, expected)
    state, _ = _steps(clipped, task, batch, optimizer, shardings, mesh, step_lib.parts_from_config(clipped), steps=1)
    assert np.isfinite(float(optax.tree.norm(state.params)))


# ---------------------------------------------------------------- an attention kernel: alibi.py


def test_a_kernel_that_needs_positions_decodes_with_the_cache_as_it_recomputes():
    common = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=32,
                  dropout_rate=0.0, attention_dropout_rate=0.0)
    model = DecoderLM(gpt(attention_kind="alibi", **common).model)
    ids = np.random.RandomState(0).randint(1, 64, (3, 5)).astype(np.int32)
    params = _random_params(model, ids)
    from plmjax.decoding import greedy

    ours = np.asarray(greedy(model, params, ids, max_new_tokens=8))
    np.testing.assert_array_equal(ours, _uncached_greedy(model, params, ids, 8))
    slopes = params["stack"].pop("attention_shared")["slopes"]  # one table for the stack, no layer has its own
    assert slopes.shape == (4,) and not any("slopes" in "/".join(path) for path in leaves(params))
    plain = DecoderLM(gpt(**common).model).apply({"params": params}, ids)
    with_slopes = {**params, "stack": {**params["stack"], "attention_shared": {"slopes": slopes}}}
    flat = {**params, "stack": {**params["stack"], "attention_shared": {"slopes": jnp.zeros(4)}}}
    np.testing.assert_allclose(model.apply({"params": flat}, ids), plain, atol=1e-5)  # slope 0: plain attention
    assert np.abs(np.asarray(model.apply({"params": with_slopes}, ids)) - np.asarray(plain)).max() > 1e-3


# ---------------------------------------------------------------- a regularizer on sown weights: entropy.py


def _entropy_by_hand(task, params, batch):
    _, sown = task.module.apply({"params": params}, **task.model_inputs(batch), mutable=[ATTENTION_WEIGHTS])
    weights = [np.asarray(w, np.float64) for w in jax.tree.leaves(sown[ATTENTION_WEIGHTS])]
    return np.mean([-(w * np.log(np.maximum(w, 1e-30))).sum(-1).mean() for w in weights]), len(weights)


def test_an_auxiliary_loss_on_attention_weights_with_weight_zero_is_the_plain_step(step_setup):
    config, task, batch, optimizer, shardings, mesh = step_setup
    plain, plain_metrics = _steps(*step_setup)
    zero = apply_overrides(config, ["objective.regularizers=attention_entropy"])
    regularized = make_model_task(zero)
    state, metrics = _steps(zero, regularized, batch, optimizer, shardings, mesh)
    jax.tree.map(np.testing.assert_array_equal, state.params, plain.params)
    assert float(metrics["loss"]) == float(plain_metrics["loss"]) and float(metrics["attention_entropy_loss"]) > 0

    weighted = make_model_task(apply_overrides(zero, ["objective.attention_entropy.weight=0.5"]))
    params = plain.params
    loss, terms = jax.jit(lambda p: weighted.loss(p, batch))(params)
    entropy, count = _entropy_by_hand(task, params, batch)
    assert count == 1  # one layer, one self-attention
    np.testing.assert_allclose(float(terms["attention_entropy_loss"]), entropy, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(task.loss(params, batch)[0]) + 0.5 * entropy, rtol=1e-5)


def test_attention_weights_are_sown_through_scan_and_remat():
    """Scanned with full remat, the sown weights and the regularized loss's gradients equal the unrolled stack's."""
    overrides = ["model.num_layers=2", "objective.regularizers=attention_entropy",
                 "objective.attention_entropy.weight=0.5"]
    unrolled = make_model_task(apply_overrides(tiny_config(), overrides))
    scanned = make_model_task(apply_overrides(tiny_config(), [*overrides, "model.scan_layers=true", "model.remat=full"]))
    rng = np.random.default_rng(0)
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3], np.int32)
    batch = {"input_ids": rng.integers(5, 200, (2, 8)).astype(np.int32) * mask, "segment_ids": np.zeros((2, 8), np.int32),
             "attention_mask": mask, "masked_positions": np.array([[1, 2, 3, 4, 5]] * 2, np.int32),
             "masked_ids": np.full((2, 5), 9, np.int32), "masked_weights": np.ones((2, 5), np.float32),
             "nsp_labels": np.zeros(2, np.int32)}
    params = nn.meta.unbox(unrolled.init(jax.random.key(0), batch)["params"])
    layers = [params["encoder"]["stack"].pop(f"layers_{i}") for i in range(2)]
    stacked = {**params, "encoder": {**params["encoder"], "stack": {
        **params["encoder"]["stack"], "layers": jax.tree.map(lambda *x: jnp.stack(x), *layers)}}}
    params["encoder"]["stack"].update({f"layers_{i}": layer for i, layer in enumerate(layers)})
    (weights,) = jax.tree.leaves(scanned.forward({"params": stacked}, batch, deterministic=True)[1][ATTENTION_WEIGHTS])
    per_layer = jax.tree.leaves(unrolled.forward({"params": params}, batch, deterministic=True)[1][ATTENTION_WEIGHTS])
    assert weights.shape == (2, 2, 2, 8, 8)  # [layers, batch, heads, queries, keys]
    np.testing.assert_allclose(weights, np.stack(per_layer), atol=1e-6)
    assert float(np.abs(weights[:, 1, :, :, 5:]).max()) < 1e-6  # padding keys get no weight
    grads = jax.grad(lambda p: scanned.loss(p, batch)[0])(stacked)["encoder"]["stack"]["layers"]
    reference = jax.grad(lambda p: unrolled.loss(p, batch)[0])(params)["encoder"]["stack"]
    expected = jax.tree.map(lambda *x: jnp.stack(x), *[reference[f"layers_{i}"] for i in range(2)])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, expected)


# ---------------------------------------------------------------- a layer carry: summary_carry.py


def test_a_layer_carry_passes_state_from_layer_to_layer_unrolled_and_scanned():
    common = dict(vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=48, dropout_rate=0.0,
                  attention_dropout_rate=0.0)
    cfg = bert(layer_carry="running_summary", **common).model
    x = jax.random.normal(jax.random.key(0), (2, 6, 32))
    mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2])
    stack = TransformerStack(cfg, 3, causal=False)
    params = nn.meta.unbox(stack.init(jax.random.key(1), x, mask))["params"]
    params = jax.tree.map(lambda p: p + 0.3 if p.ndim == 0 else p, params)  # gates 0.8: the carry matters
    out = stack.apply({"params": params}, x, mask)

    plain = bert(**common).model  # the reference: layers without the carry, the carry's step in numpy
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    inputs = AttentionInputs(attention_bias(mask, positions, 6, False), positions, positions[:1], mask.astype(bool))
    h, carry = x, np.zeros((2, 32), np.float32)
    for i in range(3):
        layer = {k: v for k, v in params[f"layers_{i}"].items() if k != "carry"}
        h, _ = TransformerLayer(plain).apply({"params": layer}, (h, None), inputs)
        h = np.asarray(h)
        carry = carry + (h * np.asarray(mask)[:, :, None]).sum(1) / np.asarray(mask).sum(1, keepdims=True)
        h = h + float(params[f"layers_{i}"]["carry"]["gate"]) * np.tanh(carry)[:, None, :]
    np.testing.assert_allclose(out, h, atol=2e-5)

    scanned = TransformerStack(bert(layer_carry="running_summary", scan_layers=True, **common).model, 3, causal=False)
    stacked = {"layers": jax.tree.map(lambda *layers: jnp.stack(layers), *[params[f"layers_{i}"] for i in range(3)])}
    np.testing.assert_allclose(scanned.apply({"params": stacked}, x, mask), out, atol=2e-5)


# ---------------------------------------------------------------- a shared embedder (ELECTRA's)


class SharedEmbeddings(nn.Module):
    """Two encoders (e.g. a generator and a discriminator) reading one embedder."""

    cfg: object
    small: object

    def setup(self):
        self.first = Encoder(self.cfg)
        self.second = Encoder(self.small, shared_embedder=self.first.embedder)

    def __call__(self, ids):
        return self.first(ids), self.second(ids)


def test_an_encoder_can_be_given_another_models_embedder():
    cfg = bert(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=48).model
    small = bert(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=24).model
    ids = jnp.asarray(np.random.RandomState(0).randint(5, 64, (2, 7)), jnp.int32)
    model = SharedEmbeddings(cfg, small)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids))["params"]
    assert "embedder" in params["first"] and "embedder" not in params["second"]
    _, second = model.apply({"params": params}, ids)
    alone = {"embedder": params["first"]["embedder"], "stack": params["second"]["stack"]}
    np.testing.assert_allclose(second, Encoder(small).apply({"params": alone}, ids), atol=1e-6)
