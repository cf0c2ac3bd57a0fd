"""Test session setup: CPU only, eight fake devices so sharding tests can build real meshes."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `plmjax` commands run in-process must not retune this process's malloc halfway through the session
# (tests/test_cpu_tuning.py checks the tuning in fresh interpreters).
os.environ.setdefault("PLMJAX_CPU_TUNING", "0")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
