"""Exact resume across processes: `lmforge pretrain` killed with SIGKILL at a random step and resumed with
--resume logs per-step losses bitwise equal to an uninterrupted run (CPU, with gradient accumulation)."""

import random
import sys
import time
from pathlib import Path

import pytest

from lmforge.train.metrics import read_metrics
from tests.kill_resume import Killable, run_command

ROOT = Path(__file__).resolve().parents[3]


def _command(out, data, tok, *extra):
    return [sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--data-dir", str(data),
            "--tokenizer", str(tok), "--preset", "tiny-llama", "--max-steps", "12", "--batch-size", "4",
            "--grad-accum", "2", "--checkpoint-every", "2", "--eval-every", "6", "--threads", "1",
            "--no-progress", "--device", "cpu", "--set", "log_every=1", "--set", "sample_every=1000",
            "--set", "sample_tokens=2", "--set", "peak_tflops=1.0", "--set", "export_hf=false",
            "--set", "warmup_steps=2", "--precision", "fp32", *extra]


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(tmp_path, packed):
    data, tok, _ = packed
    ref = run_command(_command(tmp_path / "ref", data, tok))
    assert ref.returncode == 0, ref.stderr
    kill_after = random.Random(time.time_ns()).randint(3, 10)
    out = tmp_path / "killed"
    run, deadline = Killable(_command(out, data, tok)), time.time() + 300
    while time.time() < deadline and run.running() and max(_losses(out) or {0: 0}) < kill_after:
        time.sleep(0.02)
    run.kill()
    killed_at = max(_losses(out))
    resumed = run_command(_command(out, data, tok, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout, resumed.stdout
    want, got = _losses(tmp_path / "ref"), _losses(out)
    assert sorted(got) == list(range(1, 13))
    assert [got[s] for s in range(1, 13)] == [want[s] for s in range(1, 13)], f"killed after step {killed_at}"
