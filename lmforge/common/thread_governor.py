"""ThreadGovernor: as many torch threads as the cores other processes leave free, re-decided a few times a second.

OpenMP's default wait policy (threads spin at every barrier) is the fast one on a quiet CPU, and the one that starves
the thread with work when other processes want the same cores (benchmarks/shared_cpu.py). With one thread no
barrier spins, so lmforge keeps the spinning default and the governor lowers torch's thread count while other
processes keep the CPU busy, and raises it again when they stop. Loops call `tick()` once per step; it costs a clock
read, and every INTERVAL seconds one read of /proc/stat (elsewhere the load average).
"""

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 0.25  # seconds between two decisions
# Hysteresis: with `free` = cores minus the cores other processes use, go down to floor(free + DOWN_SLACK) threads
# and up to floor(free + UP_SLACK): on 2 cores, 2 -> 1 when others use more than 0.5 core, 1 -> 2 below 0.2.
DOWN_SLACK = 0.5
UP_SLACK = 0.2
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat's unit


def decide(current: int, maximum: int, cpus: int, others: float) -> int:
    """The thread count after a reading: `others` cores used by other processes out of `cpus`; never above
    `maximum`, never below 1, and unchanged while the reading sits between the two thresholds."""
    free = cpus - max(0.0, others)
    down = max(1, min(maximum, math.floor(free + DOWN_SLACK)))
    up = max(1, min(maximum, math.floor(free + UP_SLACK)))
    if up > current:
        return up
    if down < current:
        return down
    return min(current, maximum)


@dataclass
class ProcStatReader:
    """Linux: the cores other processes used since the previous call, from the busy and steal time of the CPUs this
    process may run on (/proc/stat) minus this process's own CPU time (all its threads)."""

    cpus: frozenset[int]
    path: str = "/proc/stat"
    clock: Callable[[], float] = time.monotonic
    own_time: Callable[[], float] = time.process_time
    _last: tuple[float, float, float] | None = None

    def busy_seconds(self) -> float:
        busy = 0
        with open(self.path, encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                name, *fields = line.split()
                if name != "cpu" and int(name[3:]) in self.cpus:
                    # user nice system idle iowait irq softirq steal (guest time is already counted in user)
                    busy += sum(int(v) for v in fields[:3]) + sum(int(v) for v in fields[5:8])
        return busy / TICKS_PER_SECOND

    def others(self, current_threads: int) -> float | None:
        sample = (self.clock(), self.busy_seconds(), self.own_time())
        last, self._last = self._last, sample
        if last is None or sample[0] <= last[0]:
            return None
        return max(0.0, ((sample[1] - last[1]) - (sample[2] - last[2])) / (sample[0] - last[0]))


@dataclass
class LoadAverageReader:
    """Elsewhere (macOS, BSD): the 1-minute load average minus our own threads (a slow, coarse reading)."""

    def others(self, current_threads: int) -> float | None:
        return max(0.0, os.getloadavg()[0] - current_threads)


def default_reader():
    """The reading this platform allows (None: no way to see other processes' load, so the governor does nothing)."""
    if os.path.exists("/proc/stat") and hasattr(os, "sched_getaffinity"):
        return ProcStatReader(frozenset(os.sched_getaffinity(0)))
    if hasattr(os, "getloadavg"):
        return LoadAverageReader()
    return None


def first_guess(loadavg_path: str = "/proc/loadavg") -> float | None:
    """Cores other processes use right now, before the first reading: on Linux the tasks runnable at this instant
    (/proc/loadavg's 4th field, "running/total") minus this thread; elsewhere the 1-minute load average, which lags
    (it still counts a process that ended a minute ago); None where neither exists."""
    try:
        with open(loadavg_path, encoding="ascii") as f:
            return max(0.0, float(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ThreadGovernor:
    """Holds torch's thread count between 1 and `maximum` (the count when it started), from readings taken at most
    every `interval` seconds, and from `initial_others` before the first one. `pin(n)` fixes n threads and stops
    governing (the user chose: --threads N)."""

    def __init__(self, maximum: int, cpus: int, reader, *, get_threads: Callable[[], int],
                 set_threads: Callable[[int], None], clock: Callable[[], float] = time.monotonic,
                 interval: float = INTERVAL, initial_others: float | None = None):
        self.maximum, self.cpus, self.reader, self.interval = maximum, cpus, reader, interval
        self.get_threads, self.set_threads, self.clock = get_threads, set_threads, clock
        self.current, self.pinned = maximum, None
        self.decisions = 0  # readings that changed the count (for tests and `lmforge info`)
        self.next_at = clock() + interval
        if reader is not None:
            reader.others(self.current)  # the baseline the first decision compares with
        if initial_others is not None and self.active:  # a first guess (first_guess()): the first step under
            self.current = decide(maximum, maximum, cpus, initial_others)  # load can take seconds when threads spin
            if self.current != get_threads():
                set_threads(self.current)

    @property
    def active(self) -> bool:
        return self.pinned is None and self.reader is not None and self.maximum > 1

    def pin(self, threads: int) -> None:
        self.pinned = self.current = threads
        self.set_threads(threads)

    def tick(self) -> int:
        """Call once per step: re-decides when the interval has passed; returns the thread count now."""
        if not self.active:
            return self.current
        now = self.clock()
        if now < self.next_at:
            return self.current
        self.next_at = now + self.interval
        others = self.reader.others(self.current)  # since the last reading, however long the step (seconds, loaded)
        if others is not None:
            threads = decide(self.current, self.maximum, self.cpus, others)
            self.decisions += threads != self.current
            self.current = threads
        if self.get_threads() != self.current:  # changed behind our back (other code, a thread that reset it)
            self.set_threads(self.current)
        return self.current
