"""Keep freed host memory mapped for reuse, so that XLA:CPU does not fault its temporaries in afresh every step.

XLA:CPU allocates a step's temporaries anew on every call (1.7 GB for GPT-2 small's train step), from its
worker threads. glibc serves a block that large to a thread outside its main arena with a fresh `mmap` and
unmaps it on free, so the kernel zeroes and faults in every page again each step: ~420k page faults, ~10% of
a GPT-2 small step on 2 cores. One arena, no `mmap` and no trimming keep the memory for the next step; the
price is that the process holds on to its peak host memory.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # mallopt parameters from glibc's <malloc.h>
OPT_OUT = "PLMJAX_KEEP_HOST_MEMORY"  # set to 0 to leave malloc alone
ACCELERATOR_PLUGINS = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin")


def jax_runs_on_cpu() -> bool:
    """Whether JAX will run on the CPU, told without starting it: JAX_PLATFORMS says so or no accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def keep_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory (one arena, no mmap, never trimmed); True if it did.

    It only works before JAX's threads first allocate (a thread keeps the arena it started with), so the
    `plmjax` command calls it first thing. Skipped off glibc, when JAX will run on an accelerator, and when
    PLMJAX_KEEP_HOST_MEMORY=0.
    """
    if os.environ.get(OPT_OUT, "1") == "0" or platform.libc_ver()[0] != "glibc" or not jax_runs_on_cpu():
        return False
    libc = ctypes.CDLL("libc.so.6")
    # mallopt returns 1 on success; a trim threshold of -1 disables trimming (mallopt(3)).
    return all(libc.mallopt(param, value) == 1
               for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
