"""`lmforge ppo`, `lmforge grpo`, `lmforge rs` and `lmforge sft` run in the one Trainer loop (issue 22, item 1):
killed with SIGKILL mid-run and resumed with --resume they log bitwise the same per-step figures (losses, rewards,
KL, held-out evaluations) as an uninterrupted run (CPU, fp32, gradient accumulation); a NaN in one GRPO update is
skipped and logged like pretraining's; a rerun over checkpoints needs --resume or --fresh."""

import json

import pytest
import torch

from lmforge.cli.rl_common import run_command
from lmforge.train.metrics import read_metrics
from lmforge.train.post import grpo
from lmforge.train.post.grpo import GRPOConfig
from tests.cli_util import assert_user_error, run_cli
from tests.kill_resume import kill_resume_and_compare, lmforge
from tests.pretrained_tiny import pretrained_tiny_dir

STEPS = 8
RL_FLAGS = ("--max-new-tokens", "4", "--eval-prompts", "4", "--eval-every", "3", "--checkpoint-every", "2",
            "--grad-accum", "2", "--threads", "1", "--no-export-hf")
ALGORITHMS = {"grpo": ("--steps", STEPS, "--prompts-per-step", "2", "--group-size", "4", "--minibatch-size", "4",
                       "--iterations", "2"),
              "ppo": ("--steps", STEPS, "--batch-size", "4", "--minibatch-size", "2", "--adaptive-kl",
                      "--target-kl", "0.01", "--critic-lr", "3e-4"),
              "rs": ("--rounds", STEPS, "--prompts-per-round", "4", "--n", "4", "--min-reward", "0.1",
                     "--batch-size", "2")}


@pytest.mark.slow  # three CLI processes each: ~30 s on a quiet machine
@pytest.mark.parametrize("command", ["grpo", "ppo"])
def test_rl_sigkill_then_resume_is_bitwise_exact(tmp_path, command):
    ref = tmp_path / "ref"
    kill_resume_and_compare(lmforge(command, "--model", pretrained_tiny_dir(), "--out", ref, *ALGORITHMS[command],
                                    *RL_FLAGS), ref, tmp_path / "killed", STEPS, (3, STEPS - 3))
    train = [r for r in read_metrics(ref / "metrics.jsonl") if r.get("kind") == "train"]
    assert all(r["updates"] >= 2 for r in train)  # several optimizer updates per step, each in 2 micro-batches
    if command == "ppo":
        assert len({r["beta"] for r in train}) == STEPS  # the adaptive KL coefficient moved: resumed from checkpoints
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["skipped_steps"] == 0
    assert summary == {**json.loads((ref / "summary.json").read_text()), "elapsed_s": summary["elapsed_s"],
                       "run": summary["run"]}  # the same before / after figures


@pytest.mark.slow
def test_sft_sigkill_then_resume_is_bitwise_exact(tmp_path):
    config = tmp_path / "sft.toml"
    config.write_text("log_every = 1\ncheckpoint_every = 2\nkeep_checkpoints = 2\neval_every = 4\nseq_len = 128\n"
                      "train_examples = 200\neval_examples = 8\nmax_new_tokens = 4\nwarmup_steps = 2\n")
    ref, steps = tmp_path / "ref", 12
    kill_resume_and_compare(lmforge("sft", "--model", pretrained_tiny_dir(), "--config", config, "--out", ref,
                                    "--max-steps", steps, "--batch-size", "4", "--grad-accum", "2", "--threads", "1",
                                    "--precision", "fp32", "--device", "cpu", "--no-progress", "--no-export-hf"),
                            ref, tmp_path / "killed", steps, (3, steps - 3))


@pytest.mark.parametrize("command", ["rs"])
def test_rs_runs_in_the_trainer_with_checkpoints(tmp_path, command):
    out = tmp_path / command
    result = run_cli(command, "--model", str(pretrained_tiny_dir()), "--out", str(out), *map(str, ALGORITHMS[command]),
                     *RL_FLAGS, timeout=300)
    assert result.returncode == 0, result.stderr
    train = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert any(r["updates"] > 0 for r in train) and all(r["loss"] is None for r in train if r["updates"] == 0)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]
    again = run_cli(command, "--model", str(pretrained_tiny_dir()), "--out", str(out), timeout=120)
    assert_user_error(again, "already holds checkpoints", "--resume", "--fresh")
    assert "held-out reward" not in again.stdout  # refused before the model is loaded and evaluated


def test_nan_in_one_grpo_update_is_skipped_and_logged(tmp_path, monkeypatch, capsys):
    real, calls = grpo.grpo_token_loss, []

    def nan_in_the_third_update(*args, **kwargs):
        loss, clipped = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), clipped

    monkeypatch.setattr(grpo, "grpo_token_loss", nan_in_the_third_update)
    cfg = GRPOConfig(steps=5, prompts_per_step=2, group_size=4, minibatch_size=8, lr=1e-3, max_new_tokens=4)
    summary = run_command(cfg, model=str(pretrained_tiny_dir()), out=str(tmp_path / "run"), task="add",
                          max_operand=9, shaping=True, task_seed=0, eval_prompts=4, eval_every=0, export_hf=True,
                          threads=1, dtype="float32")
    assert len(calls) == 5 and summary["skipped_steps"] == 1 and summary["steps"] == 5
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
    assert [r["skipped"] for r in train] == [False, False, True, False, False]
    assert all(r["updates"] == 1 for r in train)
    skipped = [line for line in capsys.readouterr().out.splitlines() if "non-finite loss or gradients" in line]
    assert len(skipped) == 1 and skipped[0].startswith("step 3:") and "update skipped" in skipped[0]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "hf" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
