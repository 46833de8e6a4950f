"""RL post-training algorithms as rollout objectives of the one Trainer loop (TRL: every trainer subclasses one
Trainer): a step samples completions with the current policy and scores them, then makes the algorithm's updates
(PPO epochs, GRPO iterations, rejection sampling's SFT passes), each through the Trainer's update — so PPO, GRPO
and rejection sampling get atomic checkpoints, exact resume, the non-finite guard, gradient accumulation, progress
and the metrics log. A step ends at a rollout boundary: a checkpoint needs the step, not the rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from lmforge.train.objectives import Objective
from lmforge.train.post.pair_run import StepStats
from lmforge.train.step import accumulate_gradients, merge_results, optimizer_step

# prompts(step, round) -> the training prompts (records with a "prompt") of a step's rollout round
Prompts = Callable[[int, int], list[dict]]


def minibatch_updates(orders: Iterable[torch.Tensor], minibatch_size: int, grad_accum: int) -> list[list[tuple]]:
    """The updates of a rollout: each order (a permutation of its rows, one per pass) cut into minibatches of
    minibatch_size rows, one update each, split into grad_accum micro-batches (rows,) of nearly equal size."""
    updates = []
    for order in orders:
        for start in range(0, len(order), minibatch_size):
            rows = order[start:start + minibatch_size]
            updates.append([(part,) for part in torch.tensor_split(rows, min(grad_accum, len(rows)))])
    return updates


class RolloutAlgorithm:
    """What the Trainer needs from an RL algorithm. `module` is what it optimises (PPO: actor and critic);
    rollout(step) samples and scores with the current policy and returns the step's updates (minibatch_updates);
    batch_loss(model, (rows,)) is the SUM of the micro-batch's units' losses and count(micro) their number (unit:
    "tokens" or "sequences"); stats() the step's figures (the rollout's and the updates' means)."""

    unit = "tokens"

    def __init__(self, module: nn.Module, prompts: Prompts | None, grad_accum: int = 1):
        self.module, self.prompts, self.grad_accum = module, prompts, grad_accum
        self.updates_stats = StepStats()  # per-unit figures of the step's micro-batches
        self.rollout_stats: dict[str, float] = {}

    def rollout(self, step: int) -> list[list[tuple]]:
        raise NotImplementedError

    def batch_loss(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        raise NotImplementedError

    def units(self, rows: torch.Tensor) -> int:
        raise NotImplementedError

    def count(self, micro: Sequence[tuple]) -> int:
        return sum(self.units(batch[0]) for batch in micro)

    def stats(self) -> dict[str, float]:
        return {**self.rollout_stats, **self.updates_stats.pop()}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    param_groups: Callable[[nn.Module], list[dict]] | None = None

    def run_step(self, step: int, optimizer: torch.optim.Optimizer, grad_clip: float) -> dict[str, float]:
        """One step outside the Trainer (tests, notebooks), through the same accumulate_gradients and
        optimizer_step: the step's figures, with its mean loss and `skipped` when no update was made."""
        results = []
        for micro in self.rollout(step):
            loss, units = accumulate_gradients(self.module, micro, batch_loss=self.batch_loss, count=self.count)
            results.append(optimizer_step(self.module, optimizer, loss, units, grad_clip))
        merged = merge_results(results)
        return {**self.stats(), "loss": merged.loss, "skipped": float(not results or merged.skipped)}

    def optimizer(self, lr: float) -> torch.optim.AdamW:
        """AdamW (no weight decay, as in the Trainer's RL runs) for run_step."""
        groups = self.param_groups(self.module) if self.param_groups is not None else [
            {"params": [p for p in self.module.parameters() if p.requires_grad]}]
        return torch.optim.AdamW([{**g, "lr": lr * g.get("lr_scale", 1.0)} for g in groups], lr=lr, weight_decay=0.0)


def rollout_objective(algo: RolloutAlgorithm, name: str, evaluate: Callable[[], dict[str, float]],
                      start_record: Callable[[], dict[str, float]], headline: str, headline_label: str) -> Objective:
    """The Objective of an RL algorithm: its rollouts, losses and state, and the held-out evaluation."""
    return Objective(names=[name], batch_loss=algo.batch_loss, count=algo.count, unit=algo.unit, stats=algo.stats,
                     evaluate=evaluate, headline=headline, headline_label=headline_label, start_record=start_record,
                     rollout=algo.rollout, state_dict=algo.state_dict, load_state_dict=algo.load_state_dict,
                     param_groups=algo.param_groups)
