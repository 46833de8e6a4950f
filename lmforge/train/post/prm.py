"""A process reward model (PRM; Lightman et al., 2023 "Let's Verify Step by Step", Math-Shepherd): the reward
model's scalar head read at the end of every reasoning step (the newline that closes it), trained with binary
cross-entropy on step labels; a solution's score aggregates its steps' P(correct) by min or product. Used for
best-of-N selection (against an outcome reward model and majority vote) and as a dense reward: DeepSeekMath's
process supervision, where a token's advantage is the sum of the group-normalised rewards of the steps from its own on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.common.errors import LmforgeError
from lmforge.train.post.prm_surprisal import SurprisalHead
from lmforge.train.post.value_head import ScalarHead

AGGREGATES = ("min", "prod")


@dataclass(frozen=True)
class EncodedSteps:
    ids: list[int]
    ends: list[int]  # the position of each step's closing newline, in step order
    labels: list[int]
    start: int = 0  # where the first step's tokens begin (the prompt's end)


def encode_steps(tokenizer, prompt: str, steps: Sequence[str], labels: Sequence[int] | None = None,
                 max_len: int = 256) -> EncodedSteps:
    """prompt + "\\n", then each step + "\\n", tokenized piece by piece so every step ends on a known token; the
    prompt's start is cut to fit max_len (steps that still do not fit are dropped)."""
    head = tokenizer.encode_plain(prompt + "\n")
    pieces = [tokenizer.encode_plain(step + "\n") for step in steps]
    room = max_len - sum(len(p) for p in pieces)
    head = head[-room:] if room > 0 else head[-8:]
    ids, ends, start = list(head), [], len(head)
    for piece in pieces:
        if len(ids) + len(piece) > max_len:
            break
        ids += piece
        ends.append(len(ids) - 1)
    if not ends:
        raise LmforgeError(f"a solution's first step does not fit in max_len={max_len} tokens")
    return EncodedSteps(ids, ends, list(labels or [])[:len(ends)], start)


def outcome_row(row: EncodedSteps, n_steps: int, correct: int, max_len: int) -> EncodedSteps:
    """The same tokens with ONE label, the final answer's correctness, read at the solution's last newline: an
    outcome reward model with the PRM's head and loss (Lightman et al.'s ORM: a classifier on final-answer
    correctness, not a pairwise model). A solution cut by max_len has no last newline to read: an error."""
    if len(row.ends) < n_steps:
        raise LmforgeError(f"a solution's last step does not fit in max_len={max_len} tokens, so its outcome "
                           f"label has nowhere to be read; raise --max-len")
    return EncodedSteps(row.ids, row.ends[-1:], [int(correct)], row.start)  # with --step-surprisal: all steps' tokens


def collate_steps(rows: Sequence[EncodedSteps], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        mask[i, :len(r.ids)] = 1
    return ids, mask


def step_logits(head: ScalarHead, rows: Sequence[EncodedSteps], pad_id: int) -> list[torch.Tensor]:
    """Per row: [n_steps] logits of P(step correct), read at the step ends (one forward pass for the batch)."""
    ids, mask = collate_steps(rows, pad_id)
    if isinstance(head, SurprisalHead):  # --step-surprisal: plus the backbone's own surprise at the step's tokens
        return head.step_logits(ids, mask, rows)
    values = head(ids, mask)
    return [values[i, r.ends] for i, r in enumerate(rows)]


def step_loss(head: ScalarHead, rows: Sequence[EncodedSteps], pad_id: int) -> tuple[torch.Tensor, int, float]:
    """(summed BCE over all steps, step count, step accuracy) of a batch of labelled solutions."""
    logits = torch.cat(step_logits(head, rows, pad_id))
    labels = torch.tensor([v for r in rows for v in r.labels], dtype=torch.float32, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
    return loss, len(labels), float(((logits > 0).float() == labels).float().mean())


@torch.no_grad()
def step_probs(head: ScalarHead, rows: Sequence[EncodedSteps], pad_id: int, batch_size: int = 64) -> list[list[float]]:
    was_training = head.training
    head.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        out += [torch.sigmoid(x).tolist() for x in step_logits(head, rows[start:start + batch_size], pad_id)]
    head.train(was_training)
    return out


def heldout_step_figures(head: ScalarHead, rows: Sequence[EncodedSteps], pad_id: int) -> dict[str, float]:
    """Step accuracy, accuracy on the wrong steps (error recall), BCE, and solution accuracy: a solution judged all
    right (every step > 0.5) exactly when it is."""
    probs = step_probs(head, rows, pad_id)
    flat = [(p, label) for ps, r in zip(probs, rows, strict=True) for p, label in zip(ps, r.labels, strict=True)]
    wrong = [p for p, label in flat if label == 0]
    eps = 1e-6
    bce = -sum(torch.log(torch.tensor(p if label else 1 - p).clamp(min=eps)).item() for p, label in flat)
    solutions = [all(p > 0.5 for p in ps) == all(r.labels) for ps, r in zip(probs, rows, strict=True)]
    return {"step_accuracy": sum((p > 0.5) == bool(label) for p, label in flat) / max(len(flat), 1),
            "error_recall": sum(p <= 0.5 for p in wrong) / max(len(wrong), 1), "loss": bce / max(len(flat), 1),
            "solution_accuracy": sum(solutions) / max(len(solutions), 1)}


def aggregate(probs: Sequence[float], how: str = "min") -> float:
    """A solution's PRM score: the weakest step (min) or P(all steps right) under independence (prod)."""
    if how not in AGGREGATES:
        raise LmforgeError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    if not probs:
        return 0.0
    return min(probs) if how == "min" else float(torch.tensor(list(probs), dtype=torch.float64).prod())


def best_of_n(scores: Sequence[float]) -> int:
    """The index of the highest score (the first on ties)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def majority_vote(answers: Sequence[object]) -> object:
    """The most frequent answer (self-consistency, Wang et al., 2023); ties go to the one seen first."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def weighted_vote(answers: Sequence[object], weights: Sequence[float]) -> object:
    """The answer with the largest summed weight (reward-model-weighted self-consistency: Math-Shepherd's "SC +
    reward model", Lightman et al.'s PRM-weighted vote); ties go to the one seen first. Weights: finite, >= 0."""
    if len(answers) != len(weights) or not len(answers):
        raise LmforgeError(f"weighted_vote needs as many weights as answers (>= 1), got {len(answers)} answers and "
                           f"{len(weights)} weights")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise LmforgeError(f"weighted_vote weights must be finite and >= 0, got {bad[0]!r}")
    totals: dict[object, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        totals[answer] = totals.get(answer, 0.0) + float(weight)
    return max(totals, key=lambda a: totals[a])  # max keeps the first of equal totals: dicts keep insertion order


def paired_bootstrap(a: Sequence[float], b: Sequence[float], iters: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """mean(a - b) over items both were scored on (the same problems, the same samples) and its percentile bootstrap
    interval (Efron & Tibshirani 1993): the items are resampled with replacement, so what both selectors find hard
    cancels and only their disagreements make the interval wide. {"diff", "low", "high"}."""
    if len(a) != len(b) or not len(a):
        raise LmforgeError(f"paired_bootstrap needs two equally long non-empty score lists, got {len(a)} and {len(b)}")
    if not 0 < level < 1 or iters < 1:
        raise LmforgeError(f"paired_bootstrap needs 0 < level < 1 and iters >= 1, got level={level}, iters={iters}")
    diffs = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(iters, dtype=torch.float64)
    for start in range(0, iters, 1000):  # 1000 resamples at a time: [1000, n] indices, not [iters, n]
        rows = min(1000, iters - start)
        means[start:start + rows] = diffs[torch.randint(len(diffs), (rows, len(diffs)), generator=generator)].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"diff": float(diffs.mean()), "low": low, "high": high}


def process_advantages(step_rewards: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]],
                       mask: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """[B, T] token advantages of GRPO with process supervision (DeepSeekMath, Shao et al., 2024, section 4.1.3):
    every step reward of a group of G completions is normalised by the mean and std of all the group's step
    rewards; a token's advantage is the sum of the normalised rewards of the steps ending at or after it.
    step_ends[i]: positions in row i's [T] where its steps end (ascending); mask: [B, T] completion tokens."""
    B, T = mask.shape
    if len(step_rewards) != B or B % group_size:
        raise LmforgeError(f"{len(step_rewards)} rows of step rewards for a [B={B}] batch in groups of {group_size}")
    out = torch.zeros(B, T)
    for g in range(0, B, group_size):
        pooled = torch.tensor([r for row in step_rewards[g:g + group_size] for r in row], dtype=torch.float32)
        mean = pooled.mean() if len(pooled) else torch.tensor(0.0)
        std = pooled.std() if len(pooled) > 1 else torch.tensor(0.0)
        for i in range(g, g + group_size):
            for reward, end in zip(step_rewards[i], step_ends[i], strict=True):
                out[i, :end + 1] += (reward - mean) / (std + eps)
    return out.to(mask.device) * mask.float()  # built on the CPU step by step; moved in one copy
