"""Wall-clock timing for benchmarks: best of N runs, the figure least disturbed by a noisy shared machine."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_time(fn: Callable[[], T], repeat: int = 3) -> tuple[float, T]:
    """(fastest wall time in seconds over `repeat` calls, the result of the last call)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
