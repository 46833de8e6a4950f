"""Timing for benchmarks: best of N runs, the figure least disturbed by a noisy shared machine. Wall-clock time by
default; `CLOCKS["process"]` (the process's CPU time) measures one thread's work on a machine other jobs load."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def best_time(fn: Callable[[], T], repeat: int = 3, clock: Callable[[], float] = time.perf_counter) -> tuple[float, T]:
    """(fastest time in seconds on `clock` over `repeat` calls, the result of the last call)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    best, result = float("inf"), None
    for _ in range(repeat):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    return best, result
