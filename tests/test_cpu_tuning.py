"""The CPU process tuning: malloc keeps XLA:CPU's freed buffers, XLA's vector width, and when to leave both alone."""

import os
import subprocess
import sys

import pytest

from plmjax import cpu_tuning

PAGES_PER_BUFFER = 64 * 2**20 // 4096  # one 64 MiB float32 array of 4096 x 4096

FAULTS_PER_STEP = """
import resource, statistics, sys
from plmjax.cpu_tuning import keep_freed_host_memory
print(keep_freed_host_memory() if sys.argv[1] == "tuned" else False)
import jax, jax.numpy as jnp
step = jax.jit(lambda x: (jnp.cumsum(x, axis=0) * 2).sum(0))  # a 64 MiB temporary per call
x = jnp.ones((4096, 4096))
faults = []
for _ in range(32):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# The tuned heap still grows now and then, when a small allocation splits a freed block; a typical step reuses.
print(statistics.median(faults[1:]))
"""

AMD_AVX512 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16\n"


def run_python(code: str, *args: str, **env: str) -> list[str]:
    """The words a fresh interpreter running `code` prints."""
    return subprocess.run([sys.executable, "-c", code, *args], env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
                          capture_output=True, text=True, check=True).stdout.split()


def test_tuned_malloc_reuses_xla_buffers_instead_of_faulting_them_in_each_step():
    tuned, faults_tuned = run_python(FAULTS_PER_STEP, "tuned")[-2:]
    untuned, faults_default = run_python(FAULTS_PER_STEP, "default")[-2:]
    assert tuned == "True" and untuned == "False"
    assert float(faults_default) > 2 * PAGES_PER_BUFFER  # glibc maps the temporaries afresh every call
    assert float(faults_tuned) < PAGES_PER_BUFFER / 2


@pytest.mark.parametrize("cpuinfo, added", [
    (AMD_AVX512, True),
    (AMD_AVX512.replace("AuthenticAMD", "GenuineIntel"), False),  # 512-bit code can lower an Intel CPU's clock
    (AMD_AVX512.replace(" avx512f", ""), False),
])
def test_512_bit_vectors_only_on_amd_cpus_with_avx512(monkeypatch, cpuinfo, added):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert cpu_tuning.prefer_512_bit_vectors(cpuinfo) is added
    expected = "--xla_force_host_platform_device_count=8" + (" --xla_cpu_prefer_vector_width=512" if added else "")
    assert os.environ["XLA_FLAGS"] == expected


def test_a_vector_width_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    assert cpu_tuning.prefer_512_bit_vectors(AMD_AVX512) is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"


def test_this_xla_accepts_the_vector_width_flag():
    # XLA aborts on a flag it does not know: this fails first if a JAX upgrade drops it.
    code = "import jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"
    assert run_python(code, XLA_FLAGS=f"{cpu_tuning.VECTOR_WIDTH_FLAG}=512")[-1] == "6.0"


@pytest.mark.parametrize("platforms, on_cpu", [("cpu", True), ("tpu", False), ("cuda,cpu", False), ("cpu,tpu", True)])
def test_jax_platforms_decides_whether_jax_runs_on_cpu(monkeypatch, platforms, on_cpu):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert cpu_tuning.jax_runs_on_cpu() is on_cpu


@pytest.mark.parametrize("off", ["0", "false", "No", " OFF "])
def test_nothing_is_tuned_when_opted_out_or_on_an_accelerator(monkeypatch, off):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(cpu_tuning.OPT_OUT, off)
    assert cpu_tuning.tune_cpu_process() == []
    monkeypatch.setenv(cpu_tuning.OPT_OUT, "1")
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert cpu_tuning.tune_cpu_process() == []


@pytest.mark.parametrize("on", ["1", "true", "Yes", "", " on "])
def test_yes_words_and_an_empty_value_leave_the_tuning_on(monkeypatch, on):
    monkeypatch.setenv(cpu_tuning.OPT_OUT, on)
    assert cpu_tuning.tuning_wanted() is True


def test_a_misspelt_opt_out_is_an_error_naming_the_variable_and_its_words(monkeypatch):
    monkeypatch.setenv(cpu_tuning.OPT_OUT, "disable")
    with pytest.raises(ValueError, match=r"PLMJAX_CPU_TUNING='disable': expected one of 0, false, no, off .* or 1, "):
        cpu_tuning.tune_cpu_process()
    from plmjax.cli import main
    with pytest.raises(SystemExit, match=r"^plmjax: error: PLMJAX_CPU_TUNING='disable'"):  # no traceback
        main(["tasks"])


def test_the_plmjax_command_tunes_the_process_before_anything_else(monkeypatch):
    calls = []
    monkeypatch.setattr("plmjax.cli.tune_cpu_process", lambda: calls.append("tuned"))
    monkeypatch.setattr("plmjax.cli.build_parser", lambda: calls.append("parsed") or pytest.fail("stop"))
    from plmjax.cli import main
    with pytest.raises(pytest.fail.Exception):
        main(["train"])
    assert calls == ["tuned", "parsed"]
