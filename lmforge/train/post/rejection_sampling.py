"""Rejection sampling fine-tuning (best-of-N, then SFT; as in Llama 2's RLHF rounds and RAFT, Dong et al., 2023):
sample N completions per prompt, keep the one the reward ranks first (when it clears a threshold), and train on
the kept completions with a masked cross-entropy (prompt tokens -100, completion tokens supervised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.train.post.rl_config import RSConfig
from lmforge.train.post.rollout import GenerateFn, RewardFn, RolloutParams, sample_rollout
from lmforge.train.step import IGNORE_INDEX, token_loss_sum


@dataclass
class Selected:
    """The kept (prompt ids, completion ids) pairs and the mean of all and of the kept rewards."""

    prompts: list[list[int]]
    completions: list[list[int]]
    mean_reward: float
    best_reward: float


@torch.no_grad()
def best_of_n(records: list[dict], tokenizer, generate_fn: GenerateFn, reward_fn: RewardFn, n: int,
              params: RolloutParams, pad_id: int, min_reward: float = float("-inf")) -> Selected:
    """For each record, the highest-reward of n sampled completions (first on ties), kept if >= min_reward."""
    repeated = [r for r in records for _ in range(n)]
    batch = sample_rollout(repeated, tokenizer, generate_fn, params, reward_fn, pad_id)
    rewards = batch.rewards.view(len(records), n)
    best = rewards.argmax(dim=1)
    rows = [i * n + int(j) for i, j in enumerate(best) if float(rewards[i, j]) >= min_reward]
    best_values = rewards.max(dim=1).values
    return Selected([batch.prompt_ids[r] for r in rows], [batch.completion_ids[r] for r in rows],
                    float(rewards.mean()), float(best_values.mean()))


def sft_batch(prompts: list[list[int]], completions: list[list[int]],
              pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs [B, T], attention [B, T], labels [B, T]) right-padded; labels are the next token on completion
    positions and IGNORE_INDEX on the prompt and the padding."""
    rows = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows) - 1
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, p) in enumerate(zip(rows, prompts, strict=True)):
        inputs[i, :len(row) - 1] = torch.tensor(row[:-1])
        attention[i, :len(row) - 1] = 1
        labels[i, len(p) - 1:len(row) - 1] = torch.tensor(row[len(p):])
    return inputs, attention, labels


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, prompts: list[list[int]],
             completions: list[list[int]], pad_id: int, grad_clip: float = 1.0) -> float:
    """One optimizer step of mean token cross-entropy on the completions; returns the loss."""
    inputs, attention, labels = sft_batch(prompts, completions, pad_id)
    model.train()
    logits = model(inputs, attention_mask=attention)
    loss = token_loss_sum(logits, labels) / (labels != IGNORE_INDEX).sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    return float(loss.detach())


def sft_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, selected: Selected, cfg: RSConfig,
               pad_id: int, generator: torch.Generator) -> float:
    """cfg.sft_epochs shuffled passes over the kept completions; mean loss (nan when nothing was kept)."""
    losses = []
    for _ in range(cfg.sft_epochs):
        order = torch.randperm(len(selected.prompts), generator=generator).tolist()
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            losses.append(sft_step(model, optimizer, [selected.prompts[i] for i in rows],
                                   [selected.completions[i] for i in rows], pad_id, cfg.grad_clip))
    return sum(losses) / len(losses) if losses else float("nan")


def rejection_sampling_round(model: torch.nn.Module, optimizer: torch.optim.Optimizer, records: list[dict],
                             tokenizer, generate_fn: GenerateFn, reward_fn: RewardFn, cfg: RSConfig, pad_id: int,
                             round_: int) -> dict[str, float]:
    """Best-of-N on `records`, then SFT on the kept completions; the metrics of the round."""
    params = RolloutParams(cfg.max_new_tokens, cfg.temperature, seed=cfg.seed * 1_000_003 + round_ * 10_007)
    model.eval()
    selected = best_of_n(records, tokenizer, generate_fn, reward_fn, cfg.n, params, pad_id, cfg.min_reward)
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + round_)
    loss = sft_epochs(model, optimizer, selected, cfg, pad_id, generator)
    return {"reward": selected.mean_reward, "best_of_n_reward": selected.best_reward,
            "kept": len(selected.prompts) / len(records), "loss": loss}
