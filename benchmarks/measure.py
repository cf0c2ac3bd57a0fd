"""Timing and memory measurement shared by both frameworks: interleaved step timing and peak RSS growth."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import statistics
import threading
import time
from typing import Callable

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass
class Runner:
    """One framework's step, ready to run: `run(n)` executes n steps and waits for the last."""

    run: Callable[[int], None]
    setup_s: float  # plmjax: lower + compile; PyTorch (eager): its first step, FLOPs counted on the way
    flops: float  # matrix-multiply FLOPs one step needs
    resident_bytes: int  # parameters (+ optimizer state when training) kept between steps
    compiled: object = None  # plmjax: the compiled XLA executable (its HLO names the thunks of a trace)


def interleaved(runners: dict[str, Runner], repeats: int, steps: int) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds per step of each runner over `repeats` turns taken in alternating order, so machine load
    hits all of them alike, and each runner's peak memory: its resident bytes plus the growth seen during an
    untimed first turn. Every timed turn follows an untimed step of the same runner: measuring memory
    hands freed pages back to the OS, and a step right after another framework's step pays for the pages
    that step took (measured: GPT-2 small 6% slower in plmjax, 1-3% in PyTorch); a training loop running
    its own steps back to back pays neither."""
    memory = {name: runner.resident_bytes + peak_growth(lambda: runner.run(steps)) for name, runner in runners.items()}
    warm_each_turn = len(runners) > 1
    if not warm_each_turn:
        next(iter(runners.values())).run(steps)
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for repeat in range(repeats):
        for name, runner in order if repeat % 2 == 0 else order[::-1]:  # nobody always follows the same runner
            if warm_each_turn:
                runner.run(1)
            start = time.perf_counter()
            runner.run(steps)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}, memory


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _release_free_memory() -> None:
    """Return freed heap pages to the OS so the next step's growth is visible in RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_growth(fn: Callable[[], None], interval_s: float = 0.002) -> int:
    """Peak resident memory above the starting point while `fn` runs (activations, gradients, temporaries)."""
    _release_free_memory()
    base = peak = _rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, _rss()) - base
