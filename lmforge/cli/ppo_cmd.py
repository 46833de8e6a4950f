"""`lmforge ppo`: PPO with a critic, a frozen reference and a per-token KL penalty, on an embedded task with a
verifiable reward. Thin: every flag is a PPOConfig field or a run/task setting (lmforge/cli/rl_common.py).
"""

from __future__ import annotations

import typer

from lmforge.cli import rl_common as common


def ppo_command(
    model: str = common.MODEL,
    out: str | None = common.OUT,
    steps: int = typer.Option(40, "--steps", help="Rollout + update rounds."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Prompts (completions) per rollout."),
    minibatch_size: int = typer.Option(16, "--minibatch-size", help="Completions per gradient step."),
    ppo_epochs: int = typer.Option(2, "--ppo-epochs", help="Passes over each rollout."),
    lr: float = typer.Option(5e-5, "--lr", help="Actor learning rate."),
    critic_lr: float | None = typer.Option(None, "--critic-lr", help="Critic learning rate (default: --lr)."),
    max_new_tokens: int = typer.Option(6, "--max-new-tokens", help="Most tokens per completion."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of the rollouts."),
    gamma: float = typer.Option(1.0, "--gamma", help="GAE discount."),
    lam: float = typer.Option(0.95, "--lam", help="GAE lambda."),
    clip_eps: float = typer.Option(0.2, "--clip-eps", help="Policy ratio clipping."),
    value_clip: float = typer.Option(0.2, "--value-clip", help="Value prediction clipping."),
    vf_coef: float = typer.Option(0.5, "--vf-coef", help="Weight of the value loss."),
    entropy_coef: float = typer.Option(0.0, "--entropy-coef", help="Weight of the entropy bonus."),
    beta: float = typer.Option(0.2, "--beta", help="Per-token KL penalty coefficient (initial, if adaptive)."),
    adaptive_kl: bool = typer.Option(False, "--adaptive-kl/--fixed-kl", help="Ziegler et al. controller for beta."),
    target_kl: float = typer.Option(1.0, "--target-kl", help="Target KL (nats/sequence) of the controller."),
    kl_horizon: int = typer.Option(1000, "--kl-horizon", help="Horizon of the controller."),
    whiten_advantages: bool = typer.Option(True, "--whiten/--no-whiten", help="Whiten the advantages."),
    shared_backbone: bool = typer.Option(False, "--shared-backbone/--separate-critic",
                                         help="Critic = a value head on the actor's backbone (memory saver)."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clipping (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rollouts and minibatch order."),
    task: str = common.TASK, max_operand: int = common.MAX_OPERAND, shaping: bool = common.SHAPING,
    task_seed: int = common.TASK_SEED, eval_prompts: int = common.EVAL_PROMPTS, eval_every: int = common.EVAL_EVERY,
    export_hf: bool = common.EXPORT, threads: int | None = common.THREADS, dtype: str = common.DTYPE,
    reward_model: str | None = common.REWARD_MODEL, lora_r: int = common.LORA_R,
) -> None:
    """RLHF with PPO (actor, critic, reward, reference) on a verifiable-reward task; prints before/after figures."""
    from lmforge.train.post.ppo import PPOConfig

    cfg = PPOConfig(steps=steps, batch_size=batch_size, minibatch_size=minibatch_size, ppo_epochs=ppo_epochs, lr=lr,
                    critic_lr=critic_lr, max_new_tokens=max_new_tokens, temperature=temperature, gamma=gamma,
                    lam=lam, clip_eps=clip_eps, value_clip=value_clip, vf_coef=vf_coef, entropy_coef=entropy_coef,
                    beta=beta, adaptive_kl=adaptive_kl, target_kl=target_kl, kl_horizon=kl_horizon,
                    whiten_advantages=whiten_advantages, shared_backbone=shared_backbone, grad_clip=grad_clip,
                    seed=seed)
    common.run_command(cfg, model=model, out=out, task=task, max_operand=max_operand, shaping=shaping,
                       task_seed=task_seed, eval_prompts=eval_prompts, eval_every=eval_every, export_hf=export_hf,
                       threads=threads, dtype=dtype, reward_model=reward_model, lora_r=lora_r)
