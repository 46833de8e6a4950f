"""The configs of the RL commands (`lmforge ppo`, `grpo`, `rs`), torch-free so the CLI builds its flags from them
without loading torch: each algorithm's knobs (PPOConfig, GRPOConfig, RSConfig), the run around it (RunConfig) and
the command's whole config, RLCommandConfig (the model, the embedded verifiable task, [run] and the algorithm's
section).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lmforge.common.config_fields import section, setting
from lmforge.common.errors import ConfigError
from lmforge.train.config_sections import (
    check_between,
    check_device,
    check_ints,
    check_threads_and_resume,
    device_setting,
)

GROUP_ADVANTAGES = ("grpo", "drgrpo", "rloo", "remax")
LOSS_AGGREGATIONS = ("sequence", "token", "constant")


@dataclass(frozen=True)
class PPOConfig:
    steps: int = setting(40, "Rollout + update rounds.")
    batch_size: int = setting(32, "Prompts (= completions) per rollout.", short="-b")
    minibatch_size: int = setting(16, "Completions per gradient step.")
    ppo_epochs: int = setting(2, "Passes over each rollout.")
    lr: float = setting(5e-5, "Actor learning rate.")
    critic_lr: float | None = setting(None, "Critic learning rate (default: --lr).")
    max_new_tokens: int = setting(6, "Most tokens per completion.")
    temperature: float = setting(1.0, "Sampling temperature of the rollouts.")
    gamma: float = setting(1.0, "GAE discount.")
    lam: float = setting(0.95, "GAE lambda.")
    clip_eps: float = setting(0.2, "Policy ratio clipping.")
    value_clip: float = setting(0.2, "Value prediction clipping around the rollout's values.")
    vf_coef: float = setting(0.5, "Weight of the value loss.")
    entropy_coef: float = setting(0.0, "Weight of the entropy bonus.")
    beta: float = setting(0.2, "Per-token KL penalty coefficient (initial value when adaptive).")
    adaptive_kl: bool = setting(False, "Ziegler et al. controller for beta, towards target_kl.", negative="--fixed-kl")
    target_kl: float = setting(1.0, "Target KL (nats per sequence) of the controller.")
    kl_horizon: int = setting(1000, "Horizon of the controller.")
    whiten_advantages: bool = setting(True, "Whiten the advantages.", flag="--whiten")
    shared_backbone: bool = setting(False, "Critic = a value head on the actor's own backbone (memory saver).",
                                    negative="--separate-critic")
    grad_clip: float = setting(1.0, "Gradient norm clipping (0 = off).")
    seed: int = setting(0, "Seed of the rollouts and minibatch order.")

    def __post_init__(self):
        check_ints(self, 1, "steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "kl_horizon")
        if self.minibatch_size > self.batch_size:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must be <= batch_size ({self.batch_size})")
        for name in ("lr", "clip_eps", "value_clip", "target_kl"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.critic_lr is not None and not self.critic_lr > 0:
            raise ConfigError(f"critic_lr must be > 0 (or None for lr), got {self.critic_lr!r}")
        for name in ("gamma", "lam"):
            check_between(self, name, 0, 1)
        for name in ("vf_coef", "entropy_coef", "beta", "grad_clip", "temperature"):
            check_between(self, name, 0)


@dataclass(frozen=True)
class GRPOConfig:
    steps: int = setting(40, "Rollout + update rounds.")
    prompts_per_step: int = setting(8, "Prompts (groups) per step.")
    group_size: int = setting(8, "G completions sampled per prompt.", short="-G")
    iterations: int = setting(1, "Updates per rollout (mu); > 1 makes the ratio and its clipping matter.")
    minibatch_size: int = setting(64, "Completions per gradient step.")
    lr: float = setting(1e-4, "Learning rate.")
    max_new_tokens: int = setting(6, "Most tokens per completion.")
    temperature: float = setting(1.0, "Sampling temperature of the rollouts.")
    beta: float = setting(0.3, "Weight of the k3 KL to the reference (0: no reference pass at all).")
    eps_low: float = setting(0.2, "Ratio clipped below at 1 - eps_low.")
    eps_high: float = setting(0.2, "Ratio clipped above at 1 + eps_high (DAPO clip-higher: > eps_low, e.g. 0.28).")
    advantage: str = setting("grpo", "Baseline: grpo | drgrpo | rloo | remax.")
    loss_agg: str = setting("sequence", "sequence: mean per sequence, then over sequences (GRPO) | token: over all "
                            "tokens (DAPO) | constant: sum over tokens / max_new_tokens, then mean (Dr. GRPO).")
    dynamic_sampling: bool = setting(False, "DAPO: drop groups whose rewards are all equal and resample to refill.")
    resample_rounds: int = setting(3, "Extra rollout rounds dynamic sampling may use to refill a step.")
    overlong_buffer: int = setting(0, "DAPO soft overlong penalty over the last N tokens before max_new_tokens "
                                   "(0 = off).")
    overlong_penalty: float = setting(1.0, "The penalty at max_new_tokens.")
    grad_clip: float = setting(1.0, "Gradient norm clipping (0 = off).")
    seed: int = setting(0, "Seed of the rollouts and minibatch order.")
    process_reward_model: str | None = setting(
        None, "Process supervision (DeepSeekMath): a process reward model (`lmforge prm train`'s OUT/prm) scores every "
        "line of a completion as a step; the outcome reward is added to the last step, the step rewards are "
        "normalised over the group and a token's advantage sums those of the steps ending at or after it.",
        flag=("--process-reward-model", "--process"))

    def __post_init__(self):
        check_ints(self, 1, "steps", "prompts_per_step", "group_size", "iterations", "minibatch_size",
                   "max_new_tokens", "resample_rounds")
        if self.process_reward_model is not None and self.advantage != "grpo":
            raise ConfigError(f"--process-reward-model normalises step rewards over each group (--advantage grpo), "
                              f"got --advantage {self.advantage}")
        if self.advantage not in GROUP_ADVANTAGES:
            raise ConfigError(f"advantage must be one of {', '.join(GROUP_ADVANTAGES)}, got {self.advantage!r}")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            raise ConfigError(f"loss_agg must be one of {', '.join(LOSS_AGGREGATIONS)}, got {self.loss_agg!r}")
        if self.group_size < 2 and self.advantage != "remax":
            raise ConfigError(f"group_size must be >= 2 for the {self.advantage} baseline, got {self.group_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        for name in ("beta", "eps_low", "eps_high", "grad_clip", "temperature", "overlong_penalty"):
            check_between(self, name, 0)
        if self.eps_low >= 1:
            raise ConfigError(f"eps_low must be < 1, got {self.eps_low!r}")
        if not 0 <= self.overlong_buffer < self.max_new_tokens:
            raise ConfigError(f"overlong_buffer must be in [0, max_new_tokens), got {self.overlong_buffer!r}")


@dataclass(frozen=True)
class RSConfig:
    rounds: int = setting(6, "Sample-then-train rounds.")
    prompts_per_round: int = setting(64, "Prompts sampled per round.")
    n: int = setting(16, "Completions per prompt (best of N).", short="-N")
    min_reward: float = setting(0.8, "A prompt's best must reach this to be kept.")
    sft_epochs: int = setting(2, "Passes over the kept completions per round.")
    batch_size: int = setting(16, "Completions per SFT step.", short="-b")
    lr: float = setting(5e-5, "Learning rate.")
    max_new_tokens: int = setting(6, "Most tokens per completion.")
    temperature: float = setting(1.0, "Sampling temperature.")
    grad_clip: float = setting(1.0, "Gradient norm clipping (0 = off).")
    seed: int = setting(0, "Seed of the samples and the SFT order.")

    def __post_init__(self):
        check_ints(self, 1, "rounds", "prompts_per_round", "n", "sft_epochs", "batch_size", "max_new_tokens")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.temperature < 0 or self.grad_clip < 0:
            raise ConfigError("temperature and grad_clip must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """What surrounds the algorithm: where to write, how often and on how much to evaluate, the export, checkpoints
    (every checkpoint_every steps and at the end, a step ending at a rollout boundary; resume / fresh as for
    pretraining) and gradient accumulation (each update's minibatch in grad_accum micro-batches)."""

    out: str = setting("runs/rl", "Run directory (metrics.jsonl, PNG curves, report.md, checkpoints/, hf/).",
                       short="-o")
    eval_prompts: int = setting(64, "Most distinct held-out problems in each evaluation (fewer when the split is "
                                "smaller).")
    eval_every: int = setting(20, "Steps between held-out evaluations (0: before and after only).")
    export_hf: bool = setting(True, "Write the trained policy to OUT/hf.")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    checkpoint_every: int = setting(10, "Checkpoint (OUT/checkpoints) every N steps and at the end; a step ends at "
                                    "a rollout boundary.")
    keep_checkpoints: int = setting(2, "Newest checkpoints kept.")
    grad_accum: int = setting(1, "Micro-batches per update (each update's minibatch is split; the loss stays the "
                              "minibatch's mean).")
    resume: bool = setting(False, "Continue from the newest checkpoint in --out (the reference is rebuilt from "
                           "--model; only corrupt checkpoints: refused, see --fresh).")
    fresh: bool = setting(False, "Start from step 0 even where --out holds checkpoints: they move to "
                          "OUT/checkpoints.old (nothing is deleted).")
    progress: bool = setting(True, "Progress: a bar with ETA on a terminal, else (pipe, nohup, CI) a log line each "
                             "tenth of the run or 10 s.")

    def __post_init__(self):
        check_ints(self, 1, "eval_prompts", "checkpoint_every", "keep_checkpoints", "grad_accum")
        check_ints(self, 0, "eval_every")
        check_threads_and_resume(self)
        check_device(self)


@dataclass(frozen=True)
class RLCommandConfig:
    """An RL command's settings beside its algorithm: the policy, the embedded verifiable task or the user's
    prompts and reward functions (prompt_set.py, rewards.py), a reward model, LoRA."""

    model: str = setting(help="Policy to train: an HF directory (e.g. a run's hf/), a .gguf, or smollm2-135m.",
                         short="-m")
    task: str = setting("add", "Verifiable task: add | sub | mul | mixed arithmetic.")
    max_operand: int = setting(9, "Task operands are drawn from [0, MAX_OPERAND].")
    shaping: bool = setting(True, "Partial credit (0.6 exact + 0.2 closeness + 0.2 format) instead of 0/1 exact "
                            "match.")
    task_seed: int = setting(0, "Seed of the task's prompt generator.")
    dtype: str = setting("float32", "Training dtype: float32 (recommended) or bfloat16.")
    reward_model: str | None = setting(None, "Train on a reward model's score (an `lmforge rm` run's reward_model/ "
                                       "directory) instead of the verifiable reward; held-out figures still use the "
                                       "verifiable reward.")
    lora_r: int = setting(0, "LoRA rank for the policy (q, k, v, o projections); 0 trains every weight. With LoRA the "
                          "reference is the base with the adapters switched off (no copy).")
    prompts: str | None = setting(None, "Train on your prompts instead of the arithmetic task: JSONL, one "
                                  "{\"prompt\": text or chat messages, ...columns} a line; needs --reward or "
                                  "--reward-model.")
    heldout_prompts: str | None = setting(None, "Held-out prompts (JSONL) for the before/after figures (default: "
                                          "every 5th line of --prompts).")
    reward: tuple[str, ...] = setting((), "A reward for --prompts (repeatable; the terms are summed): a built-in "
                                      "exact | numeric (vs the 'answer' column) | regex=PATTERN | json[=KEY,...] | "
                                      "length[=CHARS], or module:function / file.py:function called as fn(prompts, "
                                      "completions, **columns) -> floats; append @WEIGHT (default 1).")

    def __post_init__(self):
        if self.reward and not self.prompts:
            raise ConfigError("--reward scores your --prompts; the arithmetic task has its own reward (add "
                              "--prompts FILE.jsonl)")
        if self.prompts and not self.reward and not self.reward_model:
            raise ConfigError("--prompts needs a reward: --reward NAME / module:function, or --reward-model DIR")
        if self.heldout_prompts and not self.prompts:
            raise ConfigError("--heldout-prompts goes with --prompts")


def rl_command_config(name: str, algo: type) -> type:
    """The whole config of `lmforge NAME`: RLCommandConfig, [run] (out defaults to runs/NAME) and [NAME]."""
    return dataclasses.make_dataclass(
        f"{algo.__name__.removesuffix('Config')}CommandConfig",
        [("run", RunConfig, section(RunConfig, out=f"runs/{name}")), (name, algo, section(algo))],
        bases=(RLCommandConfig,), frozen=True)
