"""Preemption safety: SIGTERM saves and exits 0, kill -9 loses nothing saved, damaged checkpoints are skipped.

Every interrupted run must end with exactly the parameters of one uninterrupted run of the same config.
"""

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plmjax.config import load_config
from plmjax.data import pipeline
from plmjax.training.checkpoints import Checkpointer, UnreadableCheckpointError
from plmjax.training.metrics import read_metrics
from plmjax.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "bert_tiny.py")
NUM_STEPS, CHECKPOINT_EVERY = 200, 50  # enough steps that a signal sent after step 3 lands mid-run
TINY = ["model.vocab_size=512", "model.hidden_size=32", "model.mlp_dim=64", "model.num_layers=1",
        "data.seq_length=32", "data.batch_size=8", "objective.mlm.max_predictions=5", "mesh.data=1",
        f"train.num_steps={NUM_STEPS}", "train.log_every=1", "train.eval_every=0", "train.eval_steps=1",
        f"train.checkpoint_every={CHECKPOINT_EVERY}"]


NAN_SCRIPT = """
import sys
import numpy as np
from plmjax.config import load_config
from plmjax.training.trainer import Trainer, TrainingError
trainer = Trainer(load_config(sys.argv[1], sys.argv[3:]), sys.argv[2], progress=False)
clean_step = trainer.train_step
def poisoned_step(state, batch):  # the loss turns NaN at step 5
    state, metrics = clean_step(state, batch)
    return state, dict(metrics, loss=metrics["loss"] * (np.nan if int(state.step) == 5 else 1.0))
trainer.train_step = poisoned_step
try:
    trainer.run()
except TrainingError as error:
    sys.exit(str(error))
finally:
    trainer.close()
"""


@dataclasses.dataclass
class Runs:
    """`plmjax train` subprocesses sharing one tokenizer and one JAX compilation cache (only the first compiles)."""

    overrides: list[str]
    env: dict[str, str]

    def command(self, workdir):
        command = [sys.executable, "-m", "plmjax.cli", "train", "--config", CONFIG, "--workdir", workdir, "--no-progress"]
        return command + [arg for o in self.overrides for arg in ("--set", o)]

    def start(self, workdir):
        return subprocess.Popen(self.command(workdir), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish(self, workdir):
        done = subprocess.run(self.command(workdir), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done


@dataclasses.dataclass
class Reference:
    """One uninterrupted run: its workdir, final parameters and {step: training loss}."""

    runs: Runs
    workdir: str
    params: dict
    losses: dict[int, float]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    vocab = str(root / "tokenizer.json")
    pipeline.build_tokenizer(load_config(CONFIG, TINY)).save(vocab)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(root / "jax-cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    runs, workdir = Runs(TINY + [f"data.vocab={vocab}"], env), str(root / "run")
    runs.finish(workdir)
    return Reference(runs, workdir, final_params(workdir, runs.overrides), train_losses(read_metrics(workdir)))


def train_losses(records):
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def checkpoint_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def wait_for(condition, process, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended early:\n{process.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    return len(open(path).readlines()) if os.path.exists(path) else 0


def final_params(workdir, overrides):
    trainer = Trainer(load_config(CONFIG, overrides), workdir, progress=False)
    params = jax.device_get(trainer.initial_state().params)
    trainer.close()
    return params


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigterm_saves_exits_0_and_the_resumed_run_ends_as_an_uninterrupted_one(tmp_path, reference):
    workdir = str(tmp_path)
    run = reference.runs.start(workdir)
    wait_for(lambda: logged_steps(workdir) >= 3, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    stopped = checkpoint_steps(workdir)[-1]
    assert 3 <= stopped < NUM_STEPS
    assert f"preempted after step {stopped}: checkpoint saved in {workdir}/checkpoints" in err
    assert max(train_losses(read_metrics(workdir))) == stopped  # it finished the step it was in, then stopped

    assert f"eval step {NUM_STEPS}" in reference.runs.finish(workdir).stdout
    steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
    assert steps == list(range(1, NUM_STEPS + 1))  # each step trained (and logged) exactly once
    assert train_losses(read_metrics(workdir)) == reference.losses
    assert_same_params(final_params(workdir, reference.runs.overrides), reference.params)


def test_kill_9_resumes_from_the_last_saved_step_and_loses_nothing_before_it(tmp_path, reference):
    workdir = str(tmp_path)
    run = reference.runs.start(workdir)
    wait_for(lambda: checkpoint_steps(workdir), run)
    run.kill()
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL  # killed mid-run, not finished
    saved = checkpoint_steps(workdir)
    assert saved and saved[-1] < NUM_STEPS and all(s % CHECKPOINT_EVERY == 0 for s in saved)
    lines_before = logged_steps(workdir)

    reference.runs.finish(workdir)
    after = train_losses(read_metrics(workdir)[lines_before:])
    assert sorted(after) == list(range(saved[-1] + 1, NUM_STEPS + 1))  # picked up right after the last save
    assert after == {step: reference.losses[step] for step in after}
    assert_same_params(final_params(workdir, reference.runs.overrides), reference.params)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference.workdir, workdir)
    latest, previous = checkpoint_steps(workdir)[-1], checkpoint_steps(workdir)[-2]
    for directory, _, files in os.walk(os.path.join(workdir, "checkpoints", str(latest), "state")):
        for name in files:  # a torn write: every file of the latest state cut in half
            path = os.path.join(directory, name)
            os.truncate(path, os.path.getsize(path) // 2)
    lines_before = logged_steps(workdir)

    err = reference.runs.finish(workdir).stderr
    assert f"checkpoint step {latest} in {workdir}/checkpoints is unreadable" in err
    assert f"resumed from checkpoint step {previous}" in err
    assert sorted(train_losses(read_metrics(workdir)[lines_before:])) == list(range(previous + 1, latest + 1))
    assert_same_params(final_params(workdir, reference.runs.overrides), reference.params)


def test_half_written_checkpoints_are_skipped_and_none_readable_is_an_error(tmp_path, caplog):
    tree = {"w": jnp.arange(6.0).reshape(2, 3)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
    with Checkpointer(str(tmp_path)) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, jax.tree.map(lambda x: x * step, tree))
    os.remove(tmp_path / "3" / "state" / "_METADATA")  # step 3: its metadata never written
    with Checkpointer(str(tmp_path)) as checkpointer, caplog.at_level(logging.WARNING):
        restored = checkpointer.restore_latest(abstract)
        np.testing.assert_array_equal(restored["w"], tree["w"] * 2)
        assert checkpointer.all_steps() == [1, 2]  # so step 3 can be saved again
        assert "checkpoint step 3" in caplog.text and "no readable state metadata" in caplog.text

    for step in (1, 2):
        shutil.rmtree(tmp_path / str(step) / "state")
    with Checkpointer(str(tmp_path)) as checkpointer:
        with pytest.raises(UnreadableCheckpointError, match=r"(?s)no checkpoint in .* can be read.*step 2: .*step 1: "):
            checkpointer.restore_latest(abstract)
        assert checkpointer.all_steps() == [1, 2]  # nothing deleted when nothing could replace it
    with Checkpointer(str(tmp_path / "empty")) as checkpointer:
        assert checkpointer.restore_latest(abstract) is None


def test_nan_stops_naming_the_step_and_the_last_good_checkpoint_restores(tmp_path, reference):
    overrides = reference.runs.overrides + ["train.checkpoint_every=2"]
    run = subprocess.run([sys.executable, "-c", NAN_SCRIPT, CONFIG, str(tmp_path), *overrides], cwd=ROOT,
                         env=reference.runs.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    assert "non-finite training at step 5 (loss nan" in run.stderr
    assert "last good checkpoint (step 4)" in run.stderr
    assert checkpoint_steps(str(tmp_path)) == [2, 4]
    trainer = Trainer(load_config(CONFIG, overrides), str(tmp_path), progress=False)
    state = trainer.initial_state()
    trainer.close()
    assert int(state.step) == 4
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))
