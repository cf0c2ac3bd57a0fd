"""Set up a benchmark process before JAX or PyTorch start their threads; import it first.

CPU only; idle PyTorch threads must not spin while plmjax runs; the process tuned as the `plmjax` command
tunes it (plmjax/cpu_tuning.py: malloc, which speeds up both frameworks' steps, and XLA's vector width;
PLMJAX_CPU_TUNING=0 turns both off).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from plmjax.cpu_tuning import tune_cpu_process  # noqa: E402

CPU_TUNING = tune_cpu_process()
