"""GRPO with process supervision (DeepSeekMath, Shao et al., 2024, section 4.1.3): a process reward model scores
every step of each sampled completion (a step = a line), the outcome reward is added to the last step, and each
token's advantage is the sum of the group-normalised rewards of the steps from its own on (prm.process_advantages)
instead of one advantage per completion, so a token in a wrong step is pushed down while the correct steps before
it are not. A GRPOTrainer whose rollout produces [B, T-1] token advantages; the loss is GRPO's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.common.errors import ConfigError
from lmforge.train.post.grpo import GRPOTrainer
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


class ProcessGRPOTrainer(GRPOTrainer):
    """prm: anything with step_scores_batch([(prompt, steps), ...]) -> P(correct) per step (prm_train.load_prm);
    outcome_weight: how much of the reward function's score is added to each completion's last step."""

    def __init__(self, *args, prm, outcome_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cfg.advantage != "grpo":
            raise ConfigError(f"process supervision normalises step rewards per group (advantage grpo), got "
                              f"{self.cfg.advantage!r}")
        self.prm, self.outcome_weight = prm, outcome_weight

    @torch.no_grad()
    def sample_groups(self, records: list[dict], seed: int) -> tuple[Rollout, torch.Tensor]:
        batch = self.sample_completions(records, seed)
        return batch, self.token_advantages(batch)

    def token_advantages(self, batch: Rollout) -> torch.Tensor:
        """[B, T-1] advantages in the loss's coordinates (column t scores token t + 1)."""
        split = [completion_steps(self.tokenizer, c) for c in batch.completion_ids]
        scored = self.prm.step_scores_batch([(r["prompt"], steps) for r, (steps, _) in zip(batch.records, split,
                                                                                          strict=True)
                                             if steps])
        rewards, ends, k = [], [], 0
        for i, (steps, step_ends) in enumerate(split):
            row = list(scored[k]) if steps else [0.0]
            k += bool(steps)
            row[-1] += self.outcome_weight * float(batch.rewards[i])
            offset = len(batch.prompt_ids[i]) - 1  # completion token j is column offset + j
            last = len(batch.completion_ids[i]) - 1
            ends.append([offset + e for e in step_ends[:len(row)]] if steps else [offset + last])
            rewards.append(row[:len(ends[-1])])
        return process_advantages(rewards, ends, batch.mask, self.cfg.group_size)
