"""The RL commands' --reward-model and --lora-r: rollouts are scored by the reward model (a constant one makes
every logged reward exactly its value), and a LoRA policy's reference is its own base with the adapters off
(KL 0 before training), with the adapter and the merged policy written at the end."""

import json

import torch

from lmforge.cli.rl_common import run_command
from lmforge.formats.loader import load
from lmforge.train.post.grpo import GRPOConfig
from lmforge.train.post.reward_model import save_reward_model
from lmforge.train.post.value_head import ScalarHead
from tests.pretrained_tiny import pretrained_tiny_dir

CFG = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, minibatch_size=8, lr=1e-3, max_new_tokens=4)


def _run(tmp_path, name, **options):
    summary = run_command(CFG, model=str(pretrained_tiny_dir()), out=str(tmp_path / name), task="add", max_operand=9,
                          shaping=True, task_seed=0, eval_prompts=6, eval_every=0, export_hf=True, threads=1,
                          dtype="float32", **options)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in records if "reward" in r]


def test_reward_model_scores_the_rollouts(tmp_path):
    lm = load(str(pretrained_tiny_dir()))
    head = ScalarHead(lm.model)
    with torch.no_grad():
        head.score.weight.zero_()
        head.score.bias.fill_(7.0)
    save_reward_model(head, lm.tokenizer, tmp_path / "rm")
    _, steps = _run(tmp_path, "rm_run", reward_model=str(tmp_path / "rm"))
    assert steps and all(abs(r["reward"] - 7.0) < 1e-5 for r in steps)


def test_lora_policy_uses_its_base_as_the_reference(tmp_path):
    summary, steps = _run(tmp_path, "lora_run", lora_r=4)
    assert abs(summary["before_kl"]) < 1e-6  # before training the adapters are zero: policy == its base
    assert (tmp_path / "lora_run" / "adapter" / "adapter_config.json").is_file()
    merged = load(str(tmp_path / "lora_run" / "hf")).model
    base = load(str(pretrained_tiny_dir())).model
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all(any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj")) for n in changed)
