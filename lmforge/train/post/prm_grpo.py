"""GRPO with process supervision (DeepSeekMath, Shao et al., 2024, section 4.1.3): a process reward model scores
every step of each sampled completion (a step = a line), the outcome reward is added to the last step, and each
token's advantage is the sum of the group-normalised rewards of the steps from its own on (prm.process_advantages)
instead of one advantage per completion, so a token in a wrong step is pushed down while the correct steps before
it are not. A GRPOTrainer whose rollout produces [B, T-1] token advantages; the loss is GRPO's. `lmforge grpo
--process-reward-model DIR` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.common.errors import ConfigError
from lmforge.train.post.grpo import GRPOTrainer, overlong_penalty
from lmforge.train.post.prm import process_advantages
from lmforge.train.post.rollout import Rollout


def completion_steps(tokenizer, completion: Sequence[int]) -> tuple[list[str], list[int]]:
    """(steps, end indices in `completion`): a step closes at a token whose text holds a newline; a last step
    without one closes at its last token. Empty lines and special tokens (<|im_end|>) make no step."""
    steps, ends, start = [], [], 0
    for j, token in enumerate(completion):
        text = tokenizer.decode([token], skip_special_tokens=False)
        last = j == len(completion) - 1
        if "\n" in text or last:
            piece = tokenizer.decode(list(completion[start:j + 1]), skip_special_tokens=True).strip()
            if piece:
                end = j
                while end > start and not tokenizer.decode([completion[end]], skip_special_tokens=True).strip() \
                        and "\n" not in tokenizer.decode([completion[end]], skip_special_tokens=False):
                    end -= 1  # a trailing special token is not the step's end
                steps.append(piece)
                ends.append(end)
            start = j + 1
    return steps, ends


def prm_prompt(record: dict) -> str:
    """What the PRM reads as the problem: a chat prompt's last user message (a PRM is trained on the problem text,
    not on a chat template's rendering), else the prompt text."""
    users = [m["content"] for m in record.get("messages") or () if m.get("role") == "user"]
    return users[-1] if users else record["prompt"]


class ProcessGRPOTrainer(GRPOTrainer):
    """prm: anything with step_scores_batch([(prompt, steps), ...]) -> P(correct) per step (prm_train.load_prm);
    outcome_weight: how much of the reward function's score is added to each completion's last step."""

    def __init__(self, *args, prm, outcome_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.advantage != "grpo":
            raise ConfigError(f"process supervision normalises step rewards per group (advantage grpo), got "
                              f"{self.cfg.advantage!r}")
        self.prm, self.outcome_weight = prm, outcome_weight
        self.process_stats: dict[str, float] = {}

    @torch.no_grad()
    def sample_groups(self, records: list[dict], seed: int) -> tuple[Rollout, torch.Tensor]:
        batch = self.sample_completions(records, seed)
        return batch, self.token_advantages(batch)

    def collect(self, step: int):
        batch, advantages, info = super().collect(step)
        return batch, advantages, {**info, **self.process_stats}

    def token_advantages(self, batch: Rollout) -> torch.Tensor:
        """[B, T-1] advantages in the loss's coordinates (column t scores token t + 1)."""
        cfg = self.cfg
        split = [completion_steps(self.tokenizer, c) for c in batch.completion_ids]
        scored = self.prm.step_scores_batch([(prm_prompt(r), steps) for r, (steps, _) in zip(batch.records, split,
                                                                                            strict=True)
                                             if steps])
        flat = [p for row in scored for p in row]
        self.process_stats = {"prm_step_score": sum(flat) / max(len(flat), 1),
                              "prm_steps": len(flat) / max(len(split), 1)}
        outcome = batch.rewards + overlong_penalty(batch.lengths(), cfg.max_new_tokens, cfg.overlong_buffer,
                                                   cfg.overlong_penalty)
        rewards, ends, k = [], [], 0
        for i, (steps, step_ends) in enumerate(split):
            row = list(scored[k]) if steps else [0.0]
            k += bool(steps)
            row[-1] += self.outcome_weight * float(outcome[i])
            offset = len(batch.prompt_ids[i]) - 1  # completion token j is column offset + j
            last = len(batch.completion_ids[i]) - 1
            ends.append([offset + e for e in step_ends[:len(row)]] if steps else [offset + last])
            rewards.append(row[:len(ends[-1])])
        return process_advantages(rewards, ends, batch.mask, self.cfg.group_size)
