"""CPU threads that behave on a shared machine: how OpenMP threads wait, and how many there are.

torch and lmforge's C++ kernels share one OpenMP runtime (GNU libgomp). By default its idle threads spin for a while
at every barrier before they sleep; when other processes want the same cores, the spinning threads starve the thread
that has work, and a decode step that takes 1 ms alone takes 100x longer (benchmarks/shared_cpu.py). The CLI sets a
passive wait policy before torch is imported, unless the user chose one; `--threads N` caps torch's thread pool.
"""

import os

# Variables that choose how OpenMP threads wait: if the user set any, we leave them all alone.
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Sleep at once at a barrier (libgomp: GOMP_SPINCOUNT 0; Intel's runtime, if a build brings it: KMP_BLOCKTIME 0).
SHARED_CPU_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def shared_cpu_env(environ: dict | None = None) -> dict[str, str]:
    """The variables `configure_openmp` would add to `environ` (default os.environ): none when the user set one."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in WAIT_VARS):
        return {}
    return dict(SHARED_CPU_ENV)


def configure_openmp() -> None:
    """Set the passive wait policy in os.environ; call it before torch is imported (OpenMP reads it at load time).
    Child processes (torchrun ranks, data workers) inherit it."""
    os.environ.update(shared_cpu_env())


def wait_policy() -> str:
    """How OpenMP threads wait in this process, as the environment says (for `lmforge info`)."""
    chosen = [f"{name}={os.environ[name]}" for name in WAIT_VARS if name in os.environ]
    return ", ".join(chosen) if chosen else "OpenMP default (spin, then sleep)"


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads for torch's operators and lmforge's kernels (None: leave torch's default, one per
    physical core)."""
    if threads is None:
        return
    from lmforge.common.errors import LmforgeError

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LmforgeError(f"--threads must be an integer >= 1, got {threads!r}")
    import torch

    torch.set_num_threads(threads)
