"""Exact resume across processes: `lmforge pretrain` killed with SIGKILL at a random step and resumed with
--resume logs per-step losses bitwise equal to an uninterrupted run (CPU, with gradient accumulation)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]


def _command(out, data, tok, *extra):
    return [sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--data-dir", str(data),
            "--tokenizer", str(tok), "--preset", "tiny-llama", "--max-steps", "12", "--batch-size", "4",
            "--grad-accum", "2", "--checkpoint-every", "2", "--eval-every", "6", "--threads", "1",
            "--no-progress", "--device", "cpu", "--set", "log_every=1", "--set", "sample_every=1000",
            "--set", "sample_tokens=2", "--set", "peak_tflops=1.0", "--set", "export_hf=false",
            "--set", "warmup_steps=2", "--precision", "fp32", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(tmp_path, packed):
    data, tok, _ = packed
    ref = subprocess.run(_command(tmp_path / "ref", data, tok), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    kill_after = random.Random(time.time_ns()).randint(3, 10)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(out, data, tok), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if max(_losses(out) or {0: 0}) >= kill_after:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(out))
    resumed = subprocess.run(_command(out, data, tok, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout, resumed.stdout
    want, got = _losses(tmp_path / "ref"), _losses(out)
    assert sorted(got) == list(range(1, 13))
    assert [got[s] for s in range(1, 13)] == [want[s] for s in range(1, 13)], f"killed after step {killed_at}"
