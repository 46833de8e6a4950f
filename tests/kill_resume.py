"""SIGKILL a training command mid-run, resume it with --resume, and compare its metrics with an uninterrupted run:
the figures every step logged, without the wall-clock ones, must be bitwise equal (CPU, fp32, one thread)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmforge.train.metrics import read_metrics

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


def kill_resume_and_compare(command: list[str], ref_out: Path, out: Path, steps: int, kill_range: tuple[int, int],
                            timeout: float = 300) -> int:
    """Run `command` (which writes to ref_out) to the end; run it again with ref_out replaced by `out`, SIGKILL it
    after a random step in kill_range, rerun with --resume; assert both metrics logs are equal and every step was
    logged once. Returns the step after which the run was killed."""
    ref = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=timeout)
    assert ref.returncode == 0, ref.stderr
    killed_cmd = [str(out) if arg == str(ref_out) else arg for arg in command]
    kill_after = random.Random(time.time_ns()).randint(*kill_range)
    proc = subprocess.Popen(killed_cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and max(train_steps(out) or [0]) < kill_after:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(train_steps(out))
    assert killed_at < steps
    resumed = subprocess.run([*killed_cmd, "--resume"], env=env(), capture_output=True, text=True, timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout, resumed.stdout
    assert sorted(train_steps(out)) == list(range(1, steps + 1))
    want, got = records(ref_out), records(out)
    assert got == want, f"killed after step {killed_at}"
    return killed_at
