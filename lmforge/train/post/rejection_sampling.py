"""Rejection sampling fine-tuning (best-of-N, then SFT; as in Llama 2's RLHF rounds and RAFT, Dong et al., 2023):
sample N completions per prompt, keep the one the reward ranks first (when it clears a threshold), and train on
the kept completions with a masked cross-entropy (prompt tokens -100, completion tokens supervised). A rollout
objective of the one Trainer (rollout_objective.py): a round is a step, its SFT minibatches its updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.train.post.rl_config import RSConfig
from lmforge.train.post.rollout import GenerateFn, RewardFn, RolloutParams, sample_rollout
from lmforge.train.post.rollout_objective import Prompts, RolloutAlgorithm, minibatch_updates
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


def sft_loss_sum(model: torch.nn.Module, prompts: list[list[int]], completions: list[list[int]],
                 pad_id: int) -> torch.Tensor:
    """The summed token cross-entropy of the completions given their prompts (one unit per completion token)."""
    inputs, attention, labels = sft_batch(prompts, completions, pad_id)
    return token_loss_sum(model(inputs, attention_mask=attention), labels)


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, prompts: list[list[int]],
             completions: list[list[int]], pad_id: int, grad_clip: float = 1.0) -> float:
    """One optimizer step of mean token cross-entropy on the completions; returns the loss."""
    model.train()
    loss = sft_loss_sum(model, prompts, completions, pad_id) / max(sum(len(c) for c in completions), 1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    return float(loss.detach())


class RejectionSampling(RolloutAlgorithm):
    """A round per step: best-of-N on the step's prompts(step, 0), then sft_epochs shuffled passes over the kept
    completions, one update per batch_size of them (no update when none was kept)."""

    def __init__(self, cfg: RSConfig, model: torch.nn.Module, tokenizer, generate_fn: GenerateFn,
                 reward_fn: RewardFn, pad_id: int, prompts: Prompts, grad_accum: int = 1):
        super().__init__(model, prompts, grad_accum)
        self.cfg, self.tokenizer, self.generate_fn, self.reward_fn, self.pad_id = (cfg, tokenizer, generate_fn,
                                                                                   reward_fn, pad_id)

    def rollout(self, step: int) -> list[list[tuple]]:
        cfg = self.cfg
        records = self.prompts(step, 0)
        params = RolloutParams(cfg.max_new_tokens, cfg.temperature, seed=cfg.seed * 1_000_003 + step * 10_007)
        self.module.eval()
        self.selected = selected = best_of_n(records, self.tokenizer, self.generate_fn, self.reward_fn, cfg.n,
                                             params, self.pad_id, cfg.min_reward)
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        orders = [torch.randperm(len(selected.prompts), generator=generator) for _ in range(cfg.sft_epochs)]
        updates = minibatch_updates(orders, cfg.batch_size, self.grad_accum)
        self.rollout_stats = {"reward": selected.mean_reward, "best_of_n_reward": selected.best_reward,
                              "kept": len(selected.prompts) / len(records), "updates": len(updates)}
        self.module.train()
        return updates

    def units(self, rows: torch.Tensor) -> int:
        return sum(len(self.selected.completions[i]) for i in rows.tolist())

    def batch_loss(self, model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        rows = batch[0].tolist()
        return sft_loss_sum(model, [self.selected.prompts[i] for i in rows],
                            [self.selected.completions[i] for i in rows], self.pad_id)
