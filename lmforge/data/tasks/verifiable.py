"""Prompts with verifiable rewards (the RLVR setting of DeepSeekMath / Tülu 3): arithmetic questions in the
pretraining corpus's own "Q: What is 7 + 5?\\nA:" form whose answers a program checks, plus a format rule (a
single number, then stop). Deterministic in (seed, split, index); the held-out split holds disjoint problems.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lmforge.common.errors import ConfigError

KINDS = ("add", "sub", "mul", "mixed")
END_MARKERS = ("<|endoftext|>", "<|im_end|>")  # the model's end-of-text / end-of-turn tokens, decoded
STOP_MARKERS = (*END_MARKERS, "\n")  # where an answer ends
_NUMBER = re.compile(r"-?\d+")
_MAX_DRAWS = 100_000  # a non-empty split is hit within a few draws; 1e5 misses mean it is empty


@dataclass(frozen=True)
class VerifiableTask:
    """kind: which operation(s); max_operand: operands in [0, max_operand]; heldout_mod: a problem is held out when
    its stable hash % heldout_mod == 0; shaping: partial credit (see `reward`) instead of the 0/1 exact match."""

    kind: str = "add"
    max_operand: int = 9
    seed: int = 0
    heldout_mod: int = 5
    shaping: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.max_operand, bool) or not isinstance(self.max_operand, int) or self.max_operand < 1:
            raise ConfigError(f"max_operand must be an integer >= 1, got {self.max_operand!r}")
        if isinstance(self.heldout_mod, bool) or not isinstance(self.heldout_mod, int) or self.heldout_mod < 2:
            raise ConfigError(f"heldout_mod must be an integer >= 2, got {self.heldout_mod!r}")

    def record(self, index: int, split: str = "train") -> dict:
        """The index-th problem of a split ("train" or "heldout"): {"prompt", "answer", "question", "split"}."""
        if split not in ("train", "heldout"):
            raise ConfigError(f"split must be 'train' or 'heldout', got {split!r}")
        rng = random.Random(f"{self.seed}:{split}:{index}")
        for _ in range(_MAX_DRAWS):  # rejection: keep drawing until the problem belongs to the requested split
            op = rng.choice("+-*") if self.kind == "mixed" else {"add": "+", "sub": "-", "mul": "*"}[self.kind]
            a, b = rng.randint(0, self.max_operand), rng.randint(0, self.max_operand)
            if op == "-":
                a, b = max(a, b), min(a, b)
            if (is_heldout(a, op, b, self.heldout_mod)) == (split == "heldout"):
                break
        else:  # an empty split (a tiny max_operand) would otherwise loop for ever
            raise ConfigError(f"the {split} split of {self.kind} with max_operand {self.max_operand} holds no "
                              f"problem ({self.n_problems(split)} found); raise max_operand")
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        question = f"{a} {op} {b}"
        return {"prompt": f"Q: What is {question}?\nA:", "answer": answer, "question": question, "split": split}

    def records(self, n: int, split: str = "train", start: int = 0) -> list[dict]:
        return [self.record(start + i, split) for i in range(n)]

    def distinct_records(self, n: int, split: str = "heldout") -> list[dict]:
        """Up to n different problems of a split (each once), in index order: an evaluation set without repeats."""
        out, seen = [], set()
        for index in range(64 * n):
            record = self.record(index, split)
            if record["question"] not in seen:
                seen.add(record["question"])
                out.append(record)
                if len(out) == n:
                    break
        return out

    def reward(self, record: dict, completion: str) -> float:
        return reward(record, completion, shaping=self.shaping)

    def n_problems(self, split: str) -> int:
        """How many distinct problems the split holds (to size a held-out set)."""
        ops = "+-*" if self.kind == "mixed" else {"add": "+", "sub": "-", "mul": "*"}[self.kind]
        pairs = {(max(a, b), o, min(a, b)) if o == "-" else (a, o, b)
                 for o in ops for a in range(self.max_operand + 1) for b in range(self.max_operand + 1)}
        return sum(is_heldout(a, o, b, self.heldout_mod) == (split == "heldout") for a, o, b in pairs)


def is_heldout(a: int, op: str, b: int, mod: int) -> bool:
    """A stable (process-independent: string seeds go through SHA-512) hash of the problem decides its split, so
    the held-out problems are spread over all answers rather than one residue class."""
    return random.Random(f"heldout:{a}{op}{b}").randrange(mod) == 0


def answer_text(completion: str) -> str:
    """The completion up to its first stop marker (end of text, end of turn, or a new line)."""
    cut = len(completion)
    for marker in STOP_MARKERS:
        at = completion.find(marker)
        if at >= 0:
            cut = min(cut, at)
    return completion[:cut]


def first_number(text: str) -> int | None:
    match = _NUMBER.search(text)
    return int(match.group()) if match else None


def follows_format(completion: str) -> bool:
    """The answer is one number and the model ended its text (an end-of-text token) right after it."""
    answer = answer_text(completion)
    ended = any(completion[len(answer):].startswith(m) for m in END_MARKERS)
    return ended and re.fullmatch(r"\s*-?\d+\s*", answer) is not None


def reward(record: dict, completion: str, shaping: bool = False) -> float:
    """1 when the first number of the answer equals the record's answer, else 0. With shaping, partial credit:
    0.6 * exact + 0.2 * closeness (1 - |error| / 10, floored at 0) + 0.2 * format (one number, then end of text)."""
    got = first_number(answer_text(completion))
    exact = float(got is not None and got == record["answer"])
    if not shaping:
        return exact
    close = 0.0 if got is None else max(0.0, 1.0 - abs(got - record["answer"]) / 10.0)
    return 0.6 * exact + 0.2 * close + 0.2 * float(follows_format(completion))
