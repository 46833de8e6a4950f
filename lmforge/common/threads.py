"""CPU threads that behave on a shared machine: OpenMP's fast spinning threads while the CPU is ours, fewer of them
while other processes use it (thread_governor.py), or a count the user pins (`--threads N`, LMFORGE_THREADS=N).

torch and lmforge's C++ kernels share one OpenMP runtime (GNU libgomp), whose threads spin at every barrier before
they sleep: fastest alone, 10-100x slower when other processes want the same cores (benchmarks/shared_cpu.py).
"""

import contextlib
import os

from lmforge.common.errors import LmforgeError
from lmforge.common.thread_governor import ThreadGovernor, cpu_count, default_reader, first_guess

ENV = "LMFORGE_THREADS"  # "auto" (default): governed; N: pinned to N threads
# Variables that choose how OpenMP threads wait (read once, when torch loads); lmforge leaves them to the user.
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_governor: ThreadGovernor | None = None


def threads_from_env(environ=None) -> int | None:
    """LMFORGE_THREADS as a pinned count, None for "auto" or unset; anything else is a user error."""
    value = (os.environ if environ is None else environ).get(ENV, "auto").strip()
    if value.lower() in ("", "auto"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise LmforgeError(f"{ENV} must be 'auto' or an integer >= 1, got {value!r}")
    return int(value)


def governor() -> ThreadGovernor:
    """This process's governor, started on first use: its ceiling is torch's thread count at that moment (one per
    physical core unless something set it), pinned at once when LMFORGE_THREADS=N."""
    global _governor
    if _governor is None:
        import torch

        pinned = threads_from_env()
        reader = None if pinned is not None else default_reader()
        _governor = ThreadGovernor(torch.get_num_threads(), cpu_count(), reader, get_threads=torch.get_num_threads,
                                   set_threads=torch.set_num_threads, initial_others=first_guess())
        if pinned is not None:
            _governor.pin(pinned)
    return _governor


def tick(pin: int | None = None) -> None:
    """Once per decode / engine / training step, in the thread that computes: adapt the thread count to the load.
    `pin`: a count the caller's config fixes (a training run's --threads), which stops the governing."""
    current = _governor or governor()
    if pin is not None and current.pinned != pin:
        current.pin(pin)
    current.tick()


def set_threads(threads: int | None) -> None:
    """`--threads`: pin `threads` CPU threads for torch's operators and lmforge's kernels. None leaves the count to
    the governor (started at the first step, or pinned by LMFORGE_THREADS=N): it only checks that variable, without
    importing torch."""
    if threads is None:
        threads_from_env()
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LmforgeError(f"--threads must be an integer >= 1, got {threads!r}")
    governor().pin(threads)


def thread_policy() -> str:
    """How the thread count is chosen in this process (for `lmforge info`)."""
    current = governor()
    if current.pinned is not None:
        return f"pinned to {current.pinned} (--threads or {ENV})"
    if current.reader is None:
        return f"{current.maximum} (no load reading on this platform; pin with --threads or {ENV})"
    if current.maximum == 1:
        return "1 (one core)"
    return f"adaptive, 1-{current.maximum}: fewer while other processes use the CPU ({ENV}=N or --threads N pins)"


def wait_policy() -> str:
    """How OpenMP threads wait in this process, as the environment says (for `lmforge info`)."""
    chosen = [f"{name}={os.environ[name]}" for name in WAIT_VARS if name in os.environ]
    return ", ".join(chosen) if chosen else "OpenMP default (spin, then sleep)"


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's thread count set to `threads` (when given) for the block, then restored: a run's --threads."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
