"""`lmforge dpo` and `lmforge rm` run in the one Trainer loop (issue 22, item 1): killed with SIGKILL mid-run and
resumed with --resume they log bitwise the same per-step figures as an uninterrupted run (CPU, fp32, gradient
accumulation); a NaN injected into one DPO step is skipped, logged and leaves the weights finite; two micro-batches
of 4 pairs make the same step as one batch of 8 (the loss is averaged over the step's pairs)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.train.metrics import read_metrics
from lmforge.train.post import dpo
from lmforge.train.post.dpo import DPOConfig, train_dpo
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "hf"
    tiny_lm().save(directory)
    return directory


def _command(command, model, out, *extra):
    return [sys.executable, "-m", "lmforge", command, "--model", str(model), "--out", str(out), "--max-steps",
            str(STEPS), "--train-pairs", "40", "--heldout-pairs", "8", "--batch-size", "8", "--grad-accum", "2",
            "--eval-every", "4", "--checkpoint-every", "2", "--threads", "1", "--no-progress", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def _records(out):
    """{(kind, step): record} without the wall-clock figures."""
    timing = ("elapsed_s", "pairs_per_s", "memory_mb")
    return {(r.get("kind"), r["step"]): {k: v for k, v in r.items() if k not in timing}
            for r in read_metrics(out / "metrics.jsonl")}


def _train_steps(out):
    return [step for kind, step in _records(out) if kind == "train"]


@pytest.mark.slow  # three CLI processes per command: ~20 s each on a quiet machine
@pytest.mark.parametrize("command", ["dpo", "rm"])
def test_sigkill_then_resume_is_bitwise_exact(tmp_path, tiny_dir, command):
    extra = ("--no-export-hf",) if command == "dpo" else ()
    ref = subprocess.run(_command(command, tiny_dir, tmp_path / "ref", *extra), env=_env(), capture_output=True,
                         text=True)
    assert ref.returncode == 0, ref.stderr
    kill_after = random.Random(time.time_ns()).randint(3, STEPS - 4)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(command, tiny_dir, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and max(_train_steps(out) or [0]) < kill_after:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_train_steps(out))
    assert killed_at < STEPS
    resumed = subprocess.run(_command(command, tiny_dir, out, "--resume", *extra), env=_env(), capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout, resumed.stdout
    want, got = _records(tmp_path / "ref"), _records(out)
    assert sorted(_train_steps(out)) == list(range(1, STEPS + 1))
    assert got == want, f"killed after step {killed_at}"  # every loss, grad norm, held-out figure: bitwise equal
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["skipped_steps"] == 0


def _tiny_cfg(model, out, **overrides):
    base = dict(model=str(model), out=str(out), max_steps=5, train_pairs=24, heldout_pairs=8, batch_size=4,
                eval_every=5, checkpoint_every=5, threads=1, progress=False, export_hf=False)
    return DPOConfig.from_dict({**base, **overrides})


def test_nan_in_one_dpo_step_is_skipped_and_logged(tmp_path, tiny_dir, monkeypatch):
    real, calls = dpo.sequence_logprobs, []

    def nan_on_third_training_step(model, batch):
        logp, count = real(model, batch)
        if model.training:
            calls.append(1)
            if len(calls) == 3:
                logp = logp * float("nan")
        return logp, count

    monkeypatch.setattr(dpo, "sequence_logprobs", nan_on_third_training_step)
    lines = []
    summary = train_dpo(_tiny_cfg(tiny_dir, tmp_path / "run", export_hf=True), log=lines.append)
    assert len(calls) == 5 and summary["skipped_steps"] == 1 and summary["steps"] == 5
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
    assert [r["skipped"] for r in train] == [False, False, True, False, False]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    skipped = [line for line in lines if "non-finite loss or gradients" in line]
    assert len(skipped) == 1 and skipped[0].startswith("step 3:") and "update skipped" in skipped[0]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "hf" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert any(line.startswith("held-out win rate") for line in lines)


def test_two_micro_batches_make_the_step_of_one_batch(tmp_path, tiny_dir):
    quiet = lambda message: None  # noqa: E731
    one = train_dpo(_tiny_cfg(tiny_dir, tmp_path / "one", batch_size=8, max_steps=3), log=quiet)
    two = train_dpo(_tiny_cfg(tiny_dir, tmp_path / "two", batch_size=4, grad_accum=2, max_steps=3), log=quiet)
    assert one["steps"] == two["steps"] == 3

    def losses(name):
        return [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if r.get("kind") == "train"]

    assert losses("one") == pytest.approx(losses("two"), rel=1e-5, abs=1e-6)
    assert losses("one")[0] != losses("one")[-1]  # the policy moved


def test_rerun_over_checkpoints_needs_resume_or_fresh(tmp_path, tiny_dir):
    train_dpo(_tiny_cfg(tiny_dir, tmp_path / "run", max_steps=1), log=lambda message: None)
    for command in ("dpo", "rm"):
        again = run_cli(command, "--model", str(tiny_dir), "--out", str(tmp_path / "run"), timeout=120)
        assert_user_error(again, "already holds checkpoints", "--resume", "--fresh")
        assert "held-out" not in again.stdout  # refused before the model is loaded and the reference computed
