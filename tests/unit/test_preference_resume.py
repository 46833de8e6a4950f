"""`lmforge dpo` and `lmforge rm` run in the one Trainer loop (issue 22, item 1): killed with SIGKILL mid-run and
resumed with --resume they log bitwise the same per-step figures as an uninterrupted run (CPU, fp32, gradient
accumulation); a NaN injected into one DPO step is skipped, logged and leaves the weights finite; two micro-batches
of 4 pairs make the same step as one batch of 8 (the loss is averaged over the step's pairs)."""

import json
import sys

import pytest
import torch

from lmforge.train.metrics import read_metrics
from lmforge.train.post import dpo
from lmforge.train.post.dpo import DPOConfig, train_dpo
from tests.cli_util import assert_user_error, run_cli
from tests.kill_resume import kill_resume_and_compare
from tests.tiny_lm import tiny_lm

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


@pytest.mark.slow  # three CLI processes per command: ~20 s each on a quiet machine
@pytest.mark.parametrize("command", ["dpo", "rm"])
def test_sigkill_then_resume_is_bitwise_exact(tmp_path, tiny_dir, command):
    extra = ("--no-export-hf",) if command == "dpo" else ()
    out = tmp_path / "killed"
    kill_resume_and_compare(_command(command, tiny_dir, tmp_path / "ref", *extra), tmp_path / "ref", out, STEPS,
                            (3, STEPS - 4))  # every loss, grad norm, held-out figure: bitwise equal
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
