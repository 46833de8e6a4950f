"""`lmforge grpo`: GRPO and its successors (DAPO options, Dr. GRPO, RLOO / ReMax baselines) on an embedded task
with a verifiable reward. Thin: every flag is a GRPOConfig field or a run/task setting (lmforge/cli/rl_common.py).
"""

from __future__ import annotations

import typer

from lmforge.cli import rl_common as common


def grpo_command(
    model: str = common.MODEL,
    out: str | None = common.OUT,
    steps: int = typer.Option(40, "--steps", help="Rollout + update rounds."),
    prompts_per_step: int = typer.Option(8, "--prompts-per-step", help="Prompts (groups) per step."),
    group_size: int = typer.Option(8, "--group-size", "-G", help="Completions sampled per prompt."),
    iterations: int = typer.Option(1, "--iterations", help="Updates per rollout (mu); > 1 makes clipping bite."),
    minibatch_size: int = typer.Option(64, "--minibatch-size", help="Completions per gradient step."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate."),
    max_new_tokens: int = typer.Option(6, "--max-new-tokens", help="Most tokens per completion."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of the rollouts."),
    beta: float = typer.Option(0.3, "--beta", help="Weight of the k3 KL to the reference (0: no reference)."),
    eps_low: float = typer.Option(0.2, "--eps-low", help="Ratio clipped below at 1 - eps_low."),
    eps_high: float = typer.Option(0.2, "--eps-high", help="Ratio clipped above at 1 + eps_high (DAPO "
                                   "clip-higher: > eps_low, e.g. 0.28)."),
    advantage: str = typer.Option("grpo", "--advantage", help="Baseline: grpo | drgrpo | rloo | remax."),
    loss_agg: str = typer.Option("sequence", "--loss-agg", help="sequence (GRPO) | token (DAPO) | constant "
                                 "(Dr. GRPO: sum / max_new_tokens)."),
    dynamic_sampling: bool = typer.Option(False, "--dynamic-sampling/--no-dynamic-sampling",
                                          help="DAPO: drop all-same-reward groups and resample to refill."),
    resample_rounds: int = typer.Option(3, "--resample-rounds", help="Extra rollout rounds of dynamic sampling."),
    overlong_buffer: int = typer.Option(0, "--overlong-buffer", help="DAPO soft overlong penalty over the last "
                                        "N tokens before max_new_tokens (0 = off)."),
    overlong_penalty: float = typer.Option(1.0, "--overlong-penalty", help="The penalty at max_new_tokens."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clipping (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rollouts and minibatch order."),
    task: str = common.TASK, max_operand: int = common.MAX_OPERAND, shaping: bool = common.SHAPING,
    task_seed: int = common.TASK_SEED, eval_prompts: int = common.EVAL_PROMPTS, eval_every: int = common.EVAL_EVERY,
    export_hf: bool = common.EXPORT, threads: int | None = common.THREADS, dtype: str = common.DTYPE,
    reward_model: str | None = common.REWARD_MODEL, lora_r: int = common.LORA_R,
) -> None:
    """GRPO family (group baselines, no critic) on a verifiable-reward task; prints before/after figures."""
    from lmforge.train.post.grpo import GRPOConfig

    cfg = GRPOConfig(steps=steps, prompts_per_step=prompts_per_step, group_size=group_size, iterations=iterations,
                     minibatch_size=minibatch_size, lr=lr, max_new_tokens=max_new_tokens, temperature=temperature,
                     beta=beta, eps_low=eps_low, eps_high=eps_high, advantage=advantage, loss_agg=loss_agg,
                     dynamic_sampling=dynamic_sampling, resample_rounds=resample_rounds,
                     overlong_buffer=overlong_buffer, overlong_penalty=overlong_penalty, grad_clip=grad_clip,
                     seed=seed)
    common.run_command(cfg, model=model, out=out, task=task, max_operand=max_operand, shaping=shaping,
                       task_seed=task_seed, eval_prompts=eval_prompts, eval_every=eval_every, export_hf=export_hf,
                       threads=threads, dtype=dtype, reward_model=reward_model, lora_r=lora_r)
