"""PPO, GRPO and rejection sampling each raise the mean verifiable reward of a small pretrained lmforge model on
held-out arithmetic problems (disjoint from the training prompts), while the KL to the frozen reference stays under
a stated bound. Rollouts go through the real decode loop (lmforge.generation) via the generate function."""

import pytest
import torch

import lmforge
from lmforge.data.tasks.verifiable import VerifiableTask
from lmforge.train.post.grpo import GRPOConfig
from lmforge.train.post.ppo import PPOConfig
from lmforge.train.post.rejection_sampling import RSConfig
from lmforge.train.post.rl_run import RunConfig, run_rl
from lmforge.train.post.rollout import policy_generate_fn
from tests.cli_util import run_cli
from tests.pretrained_tiny import pretrained_tiny_dir

pytestmark = pytest.mark.slow

KL_BOUND = 2.0  # nats per completion (<= 6 tokens): KL(policy || reference), estimated on the policy's samples
TASK = VerifiableTask(kind="add", max_operand=9, shaping=True)


def run(cfg, tmp_path):
    torch.manual_seed(0)
    lm = lmforge.load(str(pretrained_tiny_dir()))
    generate_fn = policy_generate_fn(lm.model, lm.stop_token_ids(), pad_id=lm.config.pad_token_id or 0)
    s = run_rl(cfg, RunConfig(out=str(tmp_path), eval_every=0, threads=1), lm, generate_fn, TASK,
               log=lambda message: None)
    print(f"\n{s['algorithm']}: held-out reward (greedy) {s['before_reward_greedy']:.3f} -> "
          f"{s['after_reward_greedy']:.3f}, (sampled) {s['before_reward_sampled']:.3f} -> "
          f"{s['after_reward_sampled']:.3f}; exact match {s['before_exact_greedy']:.3f} -> "
          f"{s['after_exact_greedy']:.3f}; format {s['before_format_greedy']:.3f} -> {s['after_format_greedy']:.3f}; "
          f"KL to the reference {s['after_kl']:.3f} nats/completion ({s['after_kl_token']:.3f}/token); "
          f"{s['elapsed_s']:.0f} s")
    assert (tmp_path / "report.md").is_file() and (tmp_path / "reward.png").is_file()
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    return s


def check(s, min_gain: float):
    assert s["after_reward_greedy"] >= s["before_reward_greedy"] + min_gain
    assert s["after_reward_sampled"] > s["before_reward_sampled"]
    assert 0.0 <= s["after_kl"] < KL_BOUND  # a Monte-Carlo estimate of a KL: it may dip just below 0 by noise
    assert s["before_kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference


def test_ppo_raises_verifiable_reward_within_the_kl_bound(tmp_path):
    s = run(PPOConfig(steps=40, batch_size=32, minibatch_size=16, lr=5e-5, beta=0.2, max_new_tokens=6), tmp_path)
    check(s, min_gain=0.15)


def test_grpo_raises_verifiable_reward_within_the_kl_bound(tmp_path):
    s = run(GRPOConfig(steps=40, prompts_per_step=8, group_size=8, lr=1e-4, beta=0.3, max_new_tokens=6), tmp_path)
    check(s, min_gain=0.15)


def test_rejection_sampling_raises_verifiable_reward(tmp_path):
    s = run(RSConfig(rounds=6, prompts_per_round=64, n=16, min_reward=0.8, lr=5e-5, max_new_tokens=6), tmp_path)
    assert s["after_reward_greedy"] >= s["before_reward_greedy"] + 0.15
    assert s["after_reward_sampled"] > s["before_reward_sampled"]


def test_cli_commands_write_the_run_and_reject_bad_flags(tmp_path):
    import json

    model = str(pretrained_tiny_dir())
    for name, extra in (("grpo", ["--steps", "2", "--advantage", "rloo", "--dynamic-sampling"]),
                        ("ppo", ["--steps", "2", "--shared-backbone", "--adaptive-kl"]), ("rs", ["--rounds", "1"])):
        out = tmp_path / name
        result = run_cli(name, "--model", model, "--out", str(out), "--threads", "1", "--eval-prompts", "8", *extra,
                         timeout=300)
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["algorithm"] == name and "after_kl" in summary
        assert (out / "metrics.jsonl").is_file() and (out / "report.md").is_file()
        assert (out / "hf" / "config.json").is_file() and list(out.glob("*.png"))
    bad = run_cli("grpo", "--model", model, "--out", str(tmp_path / "bad"), "--loss-agg", "mean", timeout=300)
    assert bad.returncode == 2 and "loss_agg" in bad.stderr and "Traceback" not in bad.stderr
