"""glibc malloc keeps XLA:CPU's freed buffers mapped once plmjax tunes it; when it must leave malloc alone."""

import os
import subprocess
import sys

import pytest

from plmjax import host_memory

PAGES_PER_BUFFER = 64 * 2**20 // 4096  # one 64 MiB float32 array of 4096 x 4096

FAULTS_PER_STEP = """
import resource, sys
from plmjax.host_memory import keep_freed_host_memory
print(keep_freed_host_memory() if sys.argv[1] == "tuned" else False)
import jax, jax.numpy as jnp
step = jax.jit(lambda x: (jnp.cumsum(x, axis=0) * 2).sum(0))  # a 64 MiB temporary per call
x = jnp.ones((4096, 4096))
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


def faults_per_step(mode: str) -> tuple[bool, float]:
    """(whether malloc was tuned, minor page faults of a jitted step's call) in a fresh interpreter."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PLMJAX_KEEP_HOST_MEMORY="1")
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[-2] == "True", float(out[-1])


def test_tuned_malloc_reuses_xla_buffers_instead_of_faulting_them_in_each_step():
    tuned, faults_tuned = faults_per_step("tuned")
    untuned, faults_default = faults_per_step("default")
    assert tuned and not untuned
    assert faults_default > 2 * PAGES_PER_BUFFER  # glibc maps the temporaries afresh every call
    assert faults_tuned < PAGES_PER_BUFFER / 2


@pytest.mark.parametrize("platforms, on_cpu", [("cpu", True), ("tpu", False), ("cuda,cpu", False), ("cpu,tpu", True)])
def test_jax_platforms_decides_whether_jax_runs_on_cpu(monkeypatch, platforms, on_cpu):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.jax_runs_on_cpu() is on_cpu


def test_malloc_left_alone_when_opted_out_or_on_an_accelerator(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(host_memory.OPT_OUT, "0")
    assert host_memory.keep_freed_host_memory() is False
    monkeypatch.setenv(host_memory.OPT_OUT, "1")
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert host_memory.keep_freed_host_memory() is False


def test_the_plmjax_command_tunes_malloc_before_anything_else(monkeypatch):
    calls = []
    monkeypatch.setattr("plmjax.cli.keep_freed_host_memory", lambda: calls.append("tuned"))
    monkeypatch.setattr("plmjax.cli.build_parser", lambda: calls.append("parsed") or pytest.fail("stop"))
    from plmjax.cli import main
    with pytest.raises(pytest.fail.Exception):
        main(["train"])
    assert calls == ["tuned", "parsed"]
