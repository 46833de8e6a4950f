"""One RL post-training run, whatever the algorithm (PPO, GRPO family, rejection sampling): evaluate the policy on
held-out prompts, take the algorithm's steps while logging (RunLog: metrics.jsonl, PNG curves), evaluate again,
write summary.json and report.md with the before/after figures, and export the trained policy as an HF directory.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.data.tasks.verifiable import VerifiableTask, follows_format, reward
from lmforge.peft.lora import unload_lora
from lmforge.peft.peft_io import save_adapter
from lmforge.train.number_format import eta_text, fmt_duration
from lmforge.train.post.grpo import GRPOConfig, GRPOTrainer
from lmforge.train.post.policy_eval import evaluate_policy
from lmforge.train.post.ppo import PPOConfig, PPOTrainer
from lmforge.train.post.rejection_sampling import RSConfig, rejection_sampling_round
from lmforge.train.post.rl_config import RunConfig
from lmforge.train.post.rollout import GenerateFn, ReferenceFn, RewardFn, reference_from_model, reward_from_checker
from lmforge.train.post.run_log import RunLog, heldout_warning

AlgoConfig = PPOConfig | GRPOConfig | RSConfig


def algo_name(cfg: AlgoConfig) -> str:
    return {PPOConfig: "ppo", GRPOConfig: "grpo", RSConfig: "rs"}[type(cfg)]


def n_steps(cfg: AlgoConfig) -> int:
    return cfg.rounds if isinstance(cfg, RSConfig) else cfg.steps


def make_step(cfg: AlgoConfig, lm, reference: ReferenceFn, reward_fn: RewardFn, generate_fn: GenerateFn,
              task: VerifiableTask, pad_id: int) -> Callable[[int], dict[str, float]]:
    """step(i) -> metrics, for the algorithm of cfg, drawing fresh training prompts from the task each step."""
    if isinstance(cfg, PPOConfig):
        trainer = PPOTrainer(cfg, lm.model, reference, reward_fn, generate_fn, lm.tokenizer, pad_id)
        return lambda i: trainer.step(task.records(cfg.batch_size, "train", start=i * cfg.batch_size), i)
    if isinstance(cfg, GRPOConfig):
        trainer = GRPOTrainer(cfg, lm.model, reference if cfg.beta > 0 else None, reward_fn, generate_fn,
                              lm.tokenizer, pad_id)
        per_step = cfg.prompts_per_step * (1 + cfg.resample_rounds)

        def grpo_step(i: int) -> dict[str, float]:
            return trainer.step(lambda r: task.records(cfg.prompts_per_step, "train",
                                                       start=i * per_step + r * cfg.prompts_per_step), i)
        return grpo_step
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=cfg.lr, weight_decay=0.0)
    return lambda i: rejection_sampling_round(
        lm.model, optimizer, task.records(cfg.prompts_per_round, "train", start=i * cfg.prompts_per_round),
        lm.tokenizer, generate_fn, reward_fn, cfg, pad_id, i)


def run_rl(cfg: AlgoConfig, run: RunConfig, lm, generate_fn: GenerateFn, task: VerifiableTask,
           reward_fn: RewardFn | None = None, reference: ReferenceFn | None = None, log=print) -> dict:
    """Train lm.model in place; returns the summary (also written to run.out/summary.json).

    reward_fn: defaults to the task's verifiable reward (pass a reward model's scorer instead);
    reference: defaults to a frozen copy of the initial policy (pass an adapters-disabled one with LoRA).
    The held-out figures always use the task's own verifiable reward."""
    threads = torch.get_num_threads()
    if run.threads:
        torch.set_num_threads(run.threads)
    try:
        return _run(cfg, run, lm, generate_fn, task, reward_fn, reference, log)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: AlgoConfig, run: RunConfig, lm, generate_fn: GenerateFn, task: VerifiableTask,
         reward_fn: RewardFn | None, reference: ReferenceFn | None, log) -> dict:
    name = algo_name(cfg)
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    task_reward = reward_from_checker(task.reward)
    reward_fn = reward_fn or task_reward
    reference = reference or reference_from_model(copy.deepcopy(lm.model))
    held = task.distinct_records(run.eval_prompts, "heldout")
    max_new = cfg.max_new_tokens
    extra = {"exact": reward_from_checker(lambda r, c: reward(r, c, shaping=False)),
             "format": reward_from_checker(lambda r, c: float(follows_format(c)))}

    def evaluate() -> dict[str, float]:
        return evaluate_policy(lm.model, reference, held, lm.tokenizer, generate_fn, task_reward, pad_id, max_new,
                               extra=extra)

    rl = RunLog(run.out, log=lambda message: None)
    start = time.time()
    before = evaluate()
    log(f"{name}: before: held-out reward {before['reward_greedy']:.3f} (greedy), "
        f"{before['reward_sampled']:.3f} (sampled) on {len(held)} problems")
    warning = heldout_warning(len(held), "problems", "held-out reward", f"raise --eval-prompts, or --max-operand: "
                              f"the task holds {task.n_problems('heldout')} held-out problems")
    if warning:
        log(warning)
    rl.log({"step": 0, **{f"eval_{k}": v for k, v in before.items()}})
    step = make_step(cfg, lm, reference, reward_fn, generate_fn, task, pad_id)
    total = n_steps(cfg)
    for i in range(total):
        metrics = step(i)
        record = {"step": i + 1, **metrics, "elapsed_s": time.time() - start}
        if run.eval_every and (i + 1) % run.eval_every == 0 and i + 1 < total:
            record.update({f"eval_{k}": v for k, v in evaluate().items()})
        rl.log(record)
        if (i + 1) % max(1, total // 10) == 0:
            log(f"{name} step {i + 1}/{total}: reward {metrics.get('reward', float('nan')):.3f}; "
                f"{eta_text(i + 1, total, time.time() - start)}")
    after = evaluate()
    rl.log({"step": total, **{f"eval_{k}": v for k, v in after.items()}})
    summary = {"algorithm": name, "steps": total, "elapsed_s": time.time() - start, "heldout_problems": len(held),
               **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
               "config": asdict(cfg), "run": asdict(run), "task": asdict(task)}
    report = rl.finish(f"{name.upper()} on the verifiable {task.kind} task", summary,
                       {f"held-out reward (greedy), {len(held)} problems": (before["reward_greedy"],
                                                                             after["reward_greedy"]),
                        "held-out reward (sampled)": (before["reward_sampled"], after["reward_sampled"]),
                        "exact match (greedy)": (before["exact_greedy"], after["exact_greedy"]),
                        "format: one number then stop (greedy)": (before["format_greedy"], after["format_greedy"]),
                        "KL(policy || reference), nats/sequence": (before["kl"], after["kl"])}, [warning])
    if getattr(lm.model, "lora_config", None) is not None:  # the adapter, then the merged policy
        save_adapter(lm.model, lm.model.lora_config, Path(run.out) / "adapter")
        unload_lora(lm.model, merge=True)
    if run.export_hf:
        lm.save(Path(run.out) / "hf")
    log(f"{name}: after {total} steps: held-out reward {before['reward_greedy']:.3f} -> {after['reward_greedy']:.3f}"
        f" (greedy) on {len(held)} problems, KL to the reference {after['kl']:.3f} nats/sequence in "
        f"{fmt_duration(summary['elapsed_s'])}; report {report}")
    return summary
