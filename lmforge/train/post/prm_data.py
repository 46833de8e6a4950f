"""Step-labelled solutions for a process reward model (Lightman et al., 2023 "Let's Verify Step by Step";
Math-Shepherd, Wang et al., 2024): the JSONL format {"prompt", "steps": [...], "labels": [1, 1, 0, ...]}, and a
project-written task of multi-step additions solved by a synthetic sampler with known error rates: a carry dropped
when the running sum is copied into the next step (systematic, so wrong answers agree with each other), a later
slip that cancels it (the final answer right by accident) and off-by-one sums. A step's label says whether it is
right on its own: it continues from the previous result and adds right.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.common.jsonl import read_jsonl


@dataclass(frozen=True)
class StepSampler:
    """The synthetic policy's known error rates. miscopy: after a step that carried into the tens, P(the next step
    copies the running sum with its carry dropped, 25 -> 15) — a systematic slip, so wrong answers agree with each
    other; recover: after such a slip, P(a later copy adds the 10 back: right final answer, wrong process); slip:
    P(a step's sum is off by one)."""

    miscopy: float = 0.4
    recover: float = 0.25
    slip: float = 0.05


def step_problem(rng: random.Random, n_steps: int | None = None) -> dict:
    """{"prompt", "start", "addends", "answer"}: start with a number, add a few one-digit numbers."""
    start, addends = rng.randint(10, 89), [rng.randint(2, 9) for _ in range(n_steps or rng.randint(3, 5))]
    text = ", then ".join(f"add {a}" for a in addends)
    return {"prompt": f"Start at {start}, {text}. Show each step.", "start": start, "addends": addends,
            "answer": start + sum(addends)}


def sample_solution(problem: dict, rng: random.Random, sampler: StepSampler = StepSampler()) -> dict:
    """{"prompt", "steps", "labels", "final", "correct"}: one sampled solution, each step "x+a=y"; its label is 1
    when the step continues from the previous step's result and adds right, whatever came before."""
    value, truth, carried, steps, labels = problem["start"], problem["start"], False, [], []
    for a in problem["addends"]:
        x = value
        if carried and rng.random() < sampler.miscopy:
            x = value - 10
        elif value == truth - 10 and rng.random() < sampler.recover:
            x = value + 10  # a second slip that cancels the first
        y = x + a + (rng.choice((-1, 1)) if rng.random() < sampler.slip else 0)
        steps.append(f"{x}+{a}={y}")
        labels.append(int(x == value and y == x + a))
        carried, value, truth = (x % 10) + a >= 10, y, truth + a
    return {"prompt": problem["prompt"], "steps": steps, "labels": labels, "final": value,
            "correct": value == problem["answer"]}


def final_answer(steps: list[str]) -> int | None:
    """The number after the last "=" of the last step (None if there is none)."""
    match = re.search(r"=\s*(-?\d+)\s*$", steps[-1]) if steps else None
    return int(match.group(1)) if match else None


def step_solutions(n: int, split: str, seed: int = 0, sampler: StepSampler = StepSampler()) -> list[dict]:
    """n sampled step-labelled solutions of problems from `split` ("train" or "heldout": disjoint problems)."""
    if split not in ("train", "heldout"):
        raise LmforgeError(f"split must be 'train' or 'heldout', got {split!r}")
    rng, out = random.Random(f"prm:{seed}:{split}"), []
    while len(out) < n:
        problem = step_problem(rng)
        if is_heldout(problem) == (split == "heldout"):
            out.append(sample_solution(problem, rng, sampler))
    return out


def is_heldout(problem: dict) -> bool:
    return random.Random(f"heldout:{problem['prompt']}").randrange(5) == 0


def heldout_problems(n: int, seed: int = 0) -> list[dict]:
    """n held-out problems (never among the train split's problems)."""
    rng, out = random.Random(f"prm-problems:{seed}"), []
    while len(out) < n:
        problem = step_problem(rng)
        if is_heldout(problem):
            out.append(problem)
    return out


def validate_step_record(row: object, where: str) -> dict:
    """A {"prompt": str, "steps": [str, ...], "labels": [0|1, ...]} record of the same lengths (and an optional
    "correct": 0|1, the final answer's correctness, for outcome labels), or a one-line error."""
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise LmforgeError(f"{where}: needs a string field \"prompt\"")
    steps, labels = row.get("steps"), row.get("labels")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise LmforgeError(f"{where}: \"steps\" must be a non-empty list of non-empty strings")
    if not isinstance(labels, list) or len(labels) != len(steps) or not all(v in (0, 1) for v in labels) \
            or any(isinstance(v, float) for v in labels):
        raise LmforgeError(f"{where}: \"labels\" must be a list of 0/1, one per step ({len(steps)}), got {labels!r}")
    correct = row.get("correct")
    if (correct is not None and correct not in (0, 1)) or isinstance(correct, float):
        raise LmforgeError(f"{where}: \"correct\" (the final answer is right) must be 0/1 or true/false, "
                           f"got {correct!r}")
    out = {"prompt": row["prompt"], "steps": [s.strip() for s in steps], "labels": [int(v) for v in labels]}
    return out if correct is None else {**out, "correct": int(correct)}


def read_step_jsonl(path: str | Path) -> list[dict]:
    """The step-labelled records of a JSONL file (blank lines skipped)."""
    return read_jsonl(path, validate_step_record, what="--data", items="step-labelled records")


def split_records(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a stable 80/20 split by a hash of the prompt (all solutions of a problem on one side)."""
    held = [random.Random(f"heldout:{r['prompt']}").randrange(5) == 0 for r in rows]
    return [r for r, h in zip(rows, held, strict=True) if not h], [r for r, h in zip(rows, held, strict=True) if h]
