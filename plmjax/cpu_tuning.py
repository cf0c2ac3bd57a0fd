"""Process settings that speed up JAX on the CPU; the `plmjax` command applies them before JAX starts.

- Freed host memory stays mapped. XLA:CPU allocates a step's temporaries anew on every call (1.7 GB for
  GPT-2 small's train step), from its worker threads. glibc serves a block that large to a thread outside
  its main arena with a fresh `mmap` and unmaps it on free, so the kernel zeroes and faults in every page
  again each step: ~420k page faults, ~10% of a GPT-2 small step on 2 cores. One arena, no `mmap` and no
  trimming keep the memory for the next step. The price: the process holds on to its peak, and the heap
  grows now and then when a small allocation splits a freed large block (a toy step with three 64 MiB
  temporaries: 0.5-1.4 GB resident after 40 steps, against 0.4 GB untuned).
- XLA's own kernels (everything but the matmuls) use 512-bit vectors on AMD CPUs with AVX-512, where LLVM
  prefers 256: bert_base, t5_small and GPT-2 small train steps ~3% faster on Zen 4. Intel CPUs keep
  XLA's default, since 512-bit code can lower their clock.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

OPT_OUT = "PLMJAX_CPU_TUNING"  # set to 0 (or false, no, off) to leave the process as it is
OFF, ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on")  # unset or empty: on
ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin")
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # mallopt parameters from glibc's <malloc.h>
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"


def jax_runs_on_cpu() -> bool:
    """Whether JAX will run on the CPU, told without starting it: JAX_PLATFORMS says so or no accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def keep_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory (one arena, no mmap, never trimmed); True if it did.

    It only works before JAX's threads first allocate: a thread keeps the arena it started with.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    # mallopt returns 1 on success; a trim threshold of -1 disables trimming (mallopt(3)).
    return all(libc.mallopt(param, value) == 1
               for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))


def prefer_512_bit_vectors(cpuinfo: str | None = None) -> bool:
    """Add XLA's 512-bit vector preference to XLA_FLAGS on an AMD CPU with AVX-512 unless XLA_FLAGS sets a width; True if added."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    words = set(cpuinfo.split())
    flags = os.environ.get("XLA_FLAGS", "")
    if "AuthenticAMD" not in words or "avx512f" not in words or VECTOR_WIDTH_FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {VECTOR_WIDTH_FLAG}=512".strip()
    return True


def tuning_wanted() -> bool:
    """Whether PLMJAX_CPU_TUNING (unset: yes) allows tuning; a value that is neither yes nor no is an error."""
    value = os.environ.get(OPT_OUT, "").strip().lower() or "1"
    if value not in OFF + ON:
        raise ValueError(f"{OPT_OUT}={os.environ[OPT_OUT]!r}: expected one of {', '.join(OFF)} (leave the process "
                         f"as it is) or {', '.join(ON)}")
    return value not in OFF


def tune_cpu_process() -> list[str]:
    """Apply the settings above that fit this machine when JAX will run on the CPU; the names of those applied.

    Call it before JAX's first computation. Nothing is applied with PLMJAX_CPU_TUNING=0 (or false, no, off).
    """
    if not tuning_wanted() or not jax_runs_on_cpu():
        return []
    return [step.__name__ for step in (keep_freed_host_memory, prefer_512_bit_vectors) if step()]
