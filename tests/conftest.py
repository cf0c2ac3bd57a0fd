"""Test session setup: CPU only, eight fake devices so sharding tests can build real meshes."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `plmjax` commands run in-process must not retune this process's malloc halfway through the session
# (tests/test_cpu_tuning.py checks the tuning in fresh interpreters).
os.environ.setdefault("PLMJAX_CPU_TUNING", "0")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()


import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny ELECTRA (E=24 < H=32, a generator of width 16) trained through the command for 16 steps on pydoc.
ELECTRA_RUN = ["train.num_steps=16", "train.log_every=1", "train.eval_every=0", "train.eval_steps=1",
               "train.checkpoint_every=0", "mesh.data=1", "optimizer.warmup_steps=2", "model.vocab_size=600",
               "model.hidden_size=32", "model.embedding_size=24", "model.num_layers=2", "model.num_heads=2",
               "model.mlp_dim=48", "model.max_length=32", "data.seq_length=32", "data.batch_size=8",
               "objective.replaced_token_detection.generator_hidden_size=16"]


@pytest.fixture(scope="session")
def electra_run(tmp_path_factory):
    """The workdir of ELECTRA_RUN, trained once for every test that reads such a run."""
    from plmjax.cli import main

    workdir = str(tmp_path_factory.mktemp("electra") / "run")
    args = ["train", "--config", os.path.join(ROOT, "configs", "electra_tiny.py"), "--workdir", workdir, "--no-progress"]
    assert main(args + [a for override in ELECTRA_RUN for a in ("--set", override)]) == 0
    return workdir
