"""SIGKILL a training command mid-run, resume it with --resume, and compare its metrics with an uninterrupted run:
the figures every step logged, without the wall-clock ones, must be bitwise equal (CPU, fp32, one thread)."""

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lmforge.train.metrics import read_metrics
from tests.cli_fork import run_forked

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("elapsed_s", "memory_mb", "mfu")  # and every "*_per_s"


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def records(out: Path) -> dict:
    """{(kind, step): record} without the wall-clock figures."""
    return {(r.get("kind"), r["step"]): {k: v for k, v in r.items() if k not in TIMING and not k.endswith("_per_s")}
            for r in read_metrics(out / "metrics.jsonl")}


def train_steps(out: Path) -> list[int]:
    return [step for kind, step in records(out) if kind == "train"] if (out / "metrics.jsonl").is_file() else []


def lmforge(*args) -> list[str]:
    return [sys.executable, "-m", "lmforge", *map(str, args)]


def run_command(command: list[str], timeout: float = 300, on_start=None) -> subprocess.CompletedProcess:
    """`command` to the end: forked from the tests' warm server when it is `python -m lmforge ...` (tests/cli_fork.py),
    else a plain subprocess. `on_start(pid)` once it runs."""
    if command[:3] == lmforge() and os.environ.get("LMFORGE_TEST_FORK", "1") != "0":
        result = run_forked(command[3:], timeout, env=env(), on_start=on_start)
        if result is not None:
            return result
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(proc.pid)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


class Killable:
    """`command` running in the background (run_command in a thread) until the test SIGKILLs it."""

    def __init__(self, command: list[str], timeout: float = 300):
        started, self._finished = queue.Queue(), queue.Queue()
        self._runner = threading.Thread(target=lambda: self._finished.put(
            run_command(command, timeout, on_start=started.put)))
        self._runner.start()
        self.pid = started.get(timeout=60)

    def running(self) -> bool:
        return self._finished.empty()

    def kill(self) -> None:
        """SIGKILL it (it must still be running) and wait until it is gone."""
        assert self.running(), "the run finished before it could be killed"
        os.kill(self.pid, signal.SIGKILL)
        self._runner.join()
        assert self._finished.get().returncode == -signal.SIGKILL


def kill_resume_and_compare(command: list[str], ref_out: Path, out: Path, steps: int, kill_range: tuple[int, int],
                            timeout: float = 300) -> int:
    """Run `command` (which writes to ref_out) to the end; run it again with ref_out replaced by `out`, SIGKILL it
    after a random step in kill_range, rerun with --resume; assert both metrics logs are equal and every step was
    logged once. Returns the step after which the run was killed."""
    ref = run_command(command, timeout)
    assert ref.returncode == 0, ref.stderr
    killed_cmd = [str(out) if arg == str(ref_out) else arg for arg in command]
    kill_after = random.Random(time.time_ns()).randint(*kill_range)
    run, deadline = Killable(killed_cmd, timeout), time.time() + timeout
    while time.time() < deadline and run.running() and max(train_steps(out) or [0]) < kill_after:
        time.sleep(0.01)
    run.kill()
    killed_at = max(train_steps(out))
    assert killed_at < steps
    resumed = run_command([*killed_cmd, "--resume"], timeout)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout, resumed.stdout
    assert sorted(train_steps(out)) == list(range(1, steps + 1))
    want, got = records(ref_out), records(out)
    assert got == want, f"killed after step {killed_at}"
    return killed_at
