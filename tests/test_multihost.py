"""Multi-process training as on a pod slice: two processes with 4 CPU devices each train exactly like one with 8.

The two processes join through `jax.distributed` on 127.0.0.1 (Gloo collectives), each feeding only its
rows of every global batch, and share one workdir as the hosts of a slice share a gs:// bucket.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from plmjax import distributed
from plmjax.cli import main
from plmjax.config import load_config
from plmjax.training import metrics as metrics_lib
from plmjax.training.metrics import MetricsWriter, read_metrics
from plmjax.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "bert_tiny.py")
TINY = ["model.vocab_size=512", "model.hidden_size=32", "model.mlp_dim=64", "model.num_layers=1",
        "data.seq_length=32", "data.batch_size=16", "objective.mlm.max_predictions=5", "mesh.data=-1",
        "train.num_steps=5", "train.log_every=1", "train.eval_steps=1", "train.checkpoint_every=3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir, devices, cache, *flags, log=None):
    """`plmjax train` on `devices` fake CPU devices; output to `log` (a path) if given, else to pipes."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    command = [sys.executable, "-m", "plmjax.cli", "train", "--config", CONFIG, "--workdir", workdir, "--no-progress",
               *(arg for o in TINY for arg in ("--set", o)), *flags]
    out = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if log else out, text=True)


def start_two(workdir, cache, logs=(None, None)):
    """Processes 0 and 1 of one run, 4 devices each, meeting at a coordinator on a free local port."""
    address = f"127.0.0.1:{free_port()}"
    return [start(workdir, 4, cache, "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i),
                  log=logs[i]) for i in range(2)]


def finish(process):
    try:
        out, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, out
    return out


def train_losses(workdir):
    return [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]


def final_params(workdir):
    trainer = Trainer(load_config(CONFIG, TINY), workdir, progress=False)
    params = jax.device_get(trainer.initial_state().params)
    trainer.close()
    return params


def assert_close(losses, params, reference):
    assert [step for step, _ in losses] == [step for step, _ in reference.losses]
    np.testing.assert_allclose([loss for _, loss in losses], [loss for _, loss in reference.losses], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with 8 devices and two processes with 4 each, side by side, sharing a compilation cache."""
    root = tmp_path_factory.mktemp("multihost")
    cache, one, two = str(root / "jax-cache"), str(root / "one"), str(root / "two")
    outputs = [finish(p) for p in [start(one, 8, cache), *start_two(two, cache)]]
    reference = types.SimpleNamespace(losses=train_losses(one), params=final_params(one))
    return types.SimpleNamespace(cache=cache, one=reference, two=two, outputs=outputs)


def test_two_processes_train_exactly_like_one(runs):
    assert all("eval step 5:" in out for out in runs.outputs)
    assert [step for step, _ in runs.one.losses] == [1, 2, 3, 4, 5]
    assert_close(train_losses(runs.two), final_params(runs.two), runs.one)  # each step logged once: by process 0
    assert sorted(os.listdir(os.path.join(runs.two, "checkpoints"))) == ["3", "5"]
    assert {"config.json", "tokenizer.json"} <= set(os.listdir(runs.two))


def test_sigterm_to_one_process_stops_both_after_the_same_step_and_they_resume(runs, tmp_path):
    workdir = str(tmp_path / "run")
    logs = [str(tmp_path / f"process_{i}.log") for i in range(2)]
    processes = start_two(workdir, runs.cache, logs)
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(workdir, "tokenizer.json")):  # process 0 is past jax.distributed.initialize
        assert time.monotonic() < deadline and processes[0].poll() is None, open(logs[0]).read()
        time.sleep(0.02)
    processes[0].send_signal(signal.SIGTERM)  # a preemption notice reaches one host of the slice
    for process in processes:
        process.wait(timeout=300)
    outputs = [open(log).read() for log in logs]
    assert [p.returncode for p in processes] == [0, 0], outputs
    [stopped] = {int(re.search(r"preempted after step (\d+)", out)[1]) for out in outputs}  # the same step on both
    assert 1 <= stopped < 5
    assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))

    assert all("eval step 5:" in finish(p) for p in start_two(workdir, runs.cache))
    assert_close(train_losses(workdir), final_params(workdir), runs.one)


@pytest.mark.parametrize("flags, message", [
    (["--coordinator_address", "127.0.0.1:1234"], "missing --num_processes, --process_id"),
    (["--coordinator_address", "localhost", "--num_processes", "2", "--process_id", "0"], "must be HOST:PORT"),
    (["--coordinator_address", "127.0.0.1:1", "--num_processes", "2", "--process_id", "2"], "0 <= --process_id < --num_processes"),
])
def test_incomplete_or_bad_distributed_flags_are_refused(tmp_path, capsys, flags, message):
    assert main(["train", "--config", CONFIG, "--workdir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_metrics_in_a_bucket_are_uploaded_whole_and_survive_a_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_lib, "is_remote", lambda path: True)  # a local directory standing in for gs://
    (tmp_path / "tensorboard").mkdir()  # which tensorboardX would not need
    writer = MetricsWriter(str(tmp_path))
    writer.write(1, {"loss": 2.0})
    assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 2.0}]  # visible before close: each write uploads
    writer.close()
    resumed = MetricsWriter(str(tmp_path))
    resumed.write(2, {"loss": 1.5})
    resumed.close()
    assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


def test_initialize_joins_automatically_on_cloud_tpu_and_is_a_no_op_elsewhere(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *args, **kwargs: calls.append(args + tuple(kwargs)))
    distributed.initialize()
    assert calls == []  # this machine has no TPU: one process, nothing to join
    monkeypatch.setattr(distributed, "on_cloud_tpu", lambda: True)
    distributed.initialize()
    assert calls == [()]  # jax finds the slice's hosts itself
    distributed.initialize("10.0.0.2:8476", 4, 3)
    assert calls[-1] == ("10.0.0.2:8476", 4, 3)
