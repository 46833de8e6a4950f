"""`lmforge rs`: rejection sampling fine-tuning (best-of-N by reward, then SFT on the kept completions) on an
embedded task with a verifiable reward. Thin: every flag is an RSConfig field or a run/task setting.
"""

from __future__ import annotations

import typer

from lmforge.cli import rl_common as common


def rs_command(
    model: str = common.MODEL,
    out: str | None = common.OUT,
    rounds: int = typer.Option(6, "--rounds", help="Sample-then-train rounds."),
    prompts_per_round: int = typer.Option(64, "--prompts-per-round", help="Prompts sampled per round."),
    n: int = typer.Option(16, "--n", "-N", help="Completions per prompt (best of N)."),
    min_reward: float = typer.Option(0.8, "--min-reward", help="A prompt's best must reach this to be kept."),
    sft_epochs: int = typer.Option(2, "--sft-epochs", help="Passes over the kept completions per round."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Completions per SFT step."),
    lr: float = typer.Option(5e-5, "--lr", help="Learning rate."),
    max_new_tokens: int = typer.Option(6, "--max-new-tokens", help="Most tokens per completion."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clipping (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the samples and the SFT order."),
    task: str = common.TASK, max_operand: int = common.MAX_OPERAND, shaping: bool = common.SHAPING,
    task_seed: int = common.TASK_SEED, eval_prompts: int = common.EVAL_PROMPTS, eval_every: int = common.EVAL_EVERY,
    export_hf: bool = common.EXPORT, threads: int | None = common.THREADS, dtype: str = common.DTYPE,
    reward_model: str | None = common.REWARD_MODEL, lora_r: int = common.LORA_R,
) -> None:
    """Rejection sampling fine-tuning on a verifiable-reward task; prints before/after figures."""
    from lmforge.train.post.rejection_sampling import RSConfig

    cfg = RSConfig(rounds=rounds, prompts_per_round=prompts_per_round, n=n, min_reward=min_reward,
                   sft_epochs=sft_epochs, batch_size=batch_size, lr=lr, max_new_tokens=max_new_tokens,
                   temperature=temperature, grad_clip=grad_clip, seed=seed)
    common.run_command(cfg, model=model, out=out, task=task, max_operand=max_operand, shaping=shaping,
                       task_seed=task_seed, eval_prompts=eval_prompts, eval_every=eval_every, export_hf=export_hf,
                       threads=threads, dtype=dtype, reward_model=reward_model, lora_r=lora_r)
