"""The trainer end to end: loss falls, resume equals an uninterrupted run, bad input fails clearly."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from plmjax.config import bert, load_config
from plmjax.models.task import make_model_task
from plmjax.training.checkpoints import CheckpointMismatchError
from plmjax.training.metrics import read_metrics
from plmjax.training.trainer import Trainer, TrainingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**model):
    config = bert(**{**dict(vocab_size=512, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64,
                            max_length=64), **model})
    config.data.seq_length, config.data.batch_size = 64, 8
    config.objective.mlm.max_predictions = 10
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
    config.train.num_steps, config.train.log_every, config.train.eval_steps = 20, 1, 2
    config.mesh.data = 1
    return config


def final_params(workdir, config):
    trainer = Trainer(config, workdir, progress=False)
    params = jax.device_get(trainer.initial_state().params)
    trainer.close()
    return params


RESUME_SCRIPT = textwrap.dedent("""
    import sys
    from plmjax.config import from_dict
    import json
    from plmjax.training.trainer import Trainer
    config = from_dict(json.loads(sys.argv[1]))
    trainer = Trainer(config, sys.argv[2], progress=False)
    trainer.run(num_steps=int(sys.argv[3]))
    trainer.close()
""")


def run_in_fresh_process(config, workdir, steps):
    from plmjax.config import to_dict

    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, json.dumps(to_dict(config)), workdir, str(steps)],
                   check=True, cwd=ROOT)


def test_resume_equals_uninterrupted(tmp_path):
    config = tiny_config(dropout_rate=0.1)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run_in_fresh_process(config, straight, 20)
    run_in_fresh_process(config, resumed, 10)
    run_in_fresh_process(config, resumed, 20)
    train_losses = lambda wd: [(r["step"], r["loss"]) for r in read_metrics(wd) if "loss" in r]  # noqa: E731
    assert train_losses(straight) == train_losses(resumed)
    assert [s for s, _ in train_losses(resumed)] == list(range(1, 21))
    a, b = final_params(straight, config), final_params(resumed, config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_loss_falls_and_metrics_are_written(tmp_path):
    config = tiny_config()
    config.train.num_steps = 60
    trainer = Trainer(config, str(tmp_path), progress=False)
    final = trainer.run()
    trainer.close()
    records = read_metrics(str(tmp_path))
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5
    assert {"eval_loss", "eval_accuracy", "eval_nsp_accuracy"} <= set(records[-1])
    assert final["loss"] == pytest.approx(records[-1]["eval_loss"])
    assert os.path.isdir(tmp_path / "checkpoints" / "60")
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    config = tiny_config(dropout_rate=0.0, attention_dropout_rate=0.0)
    config.train.num_steps = 3
    one = Trainer(config, str(tmp_path / "one"), progress=False)
    one.run()
    config.train.grad_accum_steps = 4
    four = Trainer(config, str(tmp_path / "four"), progress=False)
    four.run()
    for x, y in zip(jax.tree.leaves(jax.device_get(one.state.params)), jax.tree.leaves(jax.device_get(four.state.params))):
        np.testing.assert_allclose(x, y, atol=2e-5)


def test_checkpoint_from_another_shape_is_refused(tmp_path):
    config = tiny_config()
    config.train.num_steps = 2
    Trainer(config, str(tmp_path), progress=False).run()
    wider = tiny_config(hidden_size=48)
    trainer = Trainer(wider, str(tmp_path), progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)token.*embedding.*\(512, 32\).*\(512, 48\)"):
        trainer.initial_state()


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path):
    Trainer(tiny_config(), str(tmp_path), progress=False)  # trains and saves a 512-entry tokenizer
    with pytest.raises(ValueError, match=r"tokenizer has 512 ids but model.vocab_size=256"):
        Trainer(tiny_config(vocab_size=256), str(tmp_path), progress=False)


def test_token_id_outside_vocab_is_refused_before_the_device():
    task = make_model_task(tiny_config(vocab_size=256))
    ids = np.full((2, 8), 7, np.int32)
    ids[1, 3] = 300
    batch = {"input_ids": ids, "masked_ids": np.zeros((2, 2), np.int32)}
    with pytest.raises(ValueError, match=r"feature 'input_ids' holds token id 300 outside the model's vocabulary \[0, 256\)"):
        task.validate(batch)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    config = tiny_config()
    config.train.num_steps, config.train.checkpoint_every = 30, 2
    trainer = Trainer(config, str(tmp_path), progress=False)
    clean_step = trainer.train_step

    def poisoned_step(state, batch):  # the loss turns NaN at step 5
        state, metrics = clean_step(state, batch)
        return state, dict(metrics, loss=metrics["loss"] * (np.nan if int(state.step) == 5 else 1.0))

    trainer.train_step = poisoned_step
    with pytest.raises(TrainingError, match=r"non-finite training at step 5 \(loss nan.*last good checkpoint \(step 4\)"):
        trainer.run()
    trainer.close()
    assert Trainer(config, str(tmp_path), progress=False).checkpointer.latest_step() == 4


def test_divergence_is_caught_before_it_is_saved(tmp_path):
    config = tiny_config()
    config.train.checkpoint_every = 1
    config.optimizer.learning_rate, config.optimizer.clip_grad_norm, config.optimizer.warmup_steps = 1e30, 0.0, 0
    trainer = Trainer(config, str(tmp_path), progress=False)
    with pytest.raises(TrainingError, match="non-finite training at step 1 "):
        trainer.run()
    trainer.close()


def test_cli_rejects_unknown_and_ill_typed_keys():
    cmd = [sys.executable, "-m", "plmjax.cli", "train", "--config", "configs/bert_tiny.py", "--workdir", "/tmp/x"]
    unknown = subprocess.run(cmd + ["--set", "model.num_layer=4"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2
    assert "unknown config key 'model.num_layer'" in unknown.stderr and "model.num_layers" in unknown.stderr
    typed = subprocess.run(cmd + ["--set", "train.num_steps=ten"], capture_output=True, text=True, cwd=ROOT)
    assert typed.returncode == 2 and "train.num_steps expects int, got 'ten'" in typed.stderr


def test_every_preset_loads():
    names = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
    assert {"bert_tiny.py", "bert_base.py", "bert_large.py", "t5_tiny.py", "t5_small.py", "t5_base.py",
            "t5_large.py", "gpt_tiny.py", "gpt2_small.py"} <= set(names)
    for name in names:
        load_config(os.path.join(ROOT, "configs", name), ["train.num_steps=5"])
