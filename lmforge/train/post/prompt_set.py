"""The user's prompts for RL (`lmforge ppo|grpo|rs --prompts FILE.jsonl`): one JSON object a line with a "prompt"
(a string, or a list of chat messages rendered with the tokenizer's chat template) and any other columns, which
the reward functions receive (TRL: dataset columns as keyword arguments). Held out: a second file, or every 5th
line. Training draws follow a seeded permutation per pass, a function of the step, so a resumed run draws the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.common.jsonl import read_jsonl

HELDOUT_EVERY = 5  # without a held-out file, lines 5, 10, 15, ... (1-based) are held out


def read_prompt_file(path: str | Path) -> list[dict]:
    """The records of a JSONL prompt file; a bad line is a one-line error naming it."""
    return read_jsonl(path, _check_prompt, "prompt file", "prompts")


def _check_prompt(record: object, where: str) -> dict:
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not (isinstance(prompt, str) and prompt) and not (isinstance(prompt, list) and prompt):
        raise LmforgeError(f"{where} needs a \"prompt\": a non-empty string or a list of chat messages")
    return record


@dataclass
class PromptSet:
    """Training and held-out records (each with a text "prompt" once render() ran), drawn like VerifiableTask."""

    train: list[dict]
    heldout: list[dict]
    source: str
    seed: int = 0
    rewards: list[str] = field(default_factory=list)  # the reward terms, as NAME@WEIGHT (for the summary)
    reward_fn: Callable | None = None  # the combined reward (rewards.CombinedReward), set by the command
    extra: dict[str, Callable] = field(default_factory=dict)  # each term alone, for the held-out report

    @classmethod
    def from_files(cls, prompts: str, heldout: str | None = None, seed: int = 0) -> PromptSet:
        records = read_prompt_file(prompts)
        if heldout is not None:
            train, held = records, read_prompt_file(heldout)
        else:
            train = [r for i, r in enumerate(records) if (i + 1) % HELDOUT_EVERY]
            held = [r for i, r in enumerate(records) if (i + 1) % HELDOUT_EVERY == 0]
        if not train:
            raise LmforgeError(f"{prompts} leaves no training prompts ({len(records)} line(s); every "
                               f"{HELDOUT_EVERY}th is held out without --heldout-prompts)")
        return cls(train, held, prompts, seed)

    def check_columns(self, needed: dict[str, tuple[str, ...]]) -> None:
        """Every record carries the columns each built-in reward reads (name -> columns)."""
        for name, columns in needed.items():
            for split, records in (("train", self.train), ("held-out", self.heldout)):
                for i, record in enumerate(records):
                    lacking = [c for c in columns if c not in record]
                    if lacking:
                        raise LmforgeError(f"--reward {name} reads the column(s) {', '.join(lacking)}, which "
                                           f"{split} prompt {i + 1} of {self.source} lacks")

    def render(self, tokenizer) -> None:
        """Chat-message prompts become text with the tokenizer's chat template (generation prompt added)."""
        for record in self.train + self.heldout:
            if isinstance(record["prompt"], list):
                record["messages"] = record["prompt"]
                record["prompt"] = tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True)

    def record(self, index: int) -> dict:
        """The index-th training draw: pass index // n visits the records in a permutation seeded by (seed, pass)."""
        n = len(self.train)
        order = np.random.default_rng([self.seed, index // n]).permutation(n)
        return self.train[int(order[index % n])]

    def records(self, n: int, split: str = "train", start: int = 0) -> list[dict]:
        if split != "train":
            return self.heldout[:n]
        return [self.record(start + i) for i in range(n)]

    def distinct_records(self, n: int, split: str = "heldout") -> list[dict]:
        return (self.heldout if split == "heldout" else self.train)[:n]

    def n_problems(self, split: str) -> int:
        return len(self.heldout if split == "heldout" else self.train)

    def summary(self) -> dict:
        return {"prompts": self.source, "train_prompts": len(self.train), "heldout_prompts": len(self.heldout),
                "rewards": list(self.rewards)}
