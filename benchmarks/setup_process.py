"""Set up a benchmark process before JAX or PyTorch start their threads; import it first.

CPU only; idle PyTorch threads must not spin while plmjax runs; malloc tuned as the `plmjax` command tunes
it (plmjax/host_memory.py), which speeds up both frameworks' steps (PLMJAX_KEEP_HOST_MEMORY=0 turns it off).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from plmjax.host_memory import keep_freed_host_memory  # noqa: E402

MALLOC_TUNED = keep_freed_host_memory()
