"""Embedded instruction data for SFT: chat conversations with one checkable answer each (arithmetic, questions
about invented facts stated in the prompt, format following: capital letters, repetition, number lists), a pure
function of (seed, index). Training uses indices [0, n); the held-out split starts at EVAL_OFFSET, and
`held_out_prompts` lets a trainer drop training conversations whose prompt also occurs in the held-out set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus.facts import made_up_name
from lmforge.data.corpus.words import ANIMALS, DIRECTIONS

KINDS = ("arithmetic", "fact", "upper", "repeat", "count")
SPLITS = ("train", "eval")
EVAL_OFFSET = 1_000_000_000  # held-out indices start here
SYSTEM_PROMPTS = ("You are a helpful assistant. Answer briefly.", "Give only the answer.",
                  "You are a precise assistant.")
WORDS = ANIMALS  # a small closed vocabulary: learnable by a tiny model in a short SFT
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


@dataclass(frozen=True)
class Instruction:
    """A conversation ending with the assistant's answer; `answer` is that last content, `kind` the task."""

    messages: tuple[dict, ...]
    answer: str
    kind: str


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(1, 5), rng.randint(1, 5)
        return f"What is {a} * {b}?", str(a * b)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", str(a - b)
    return f"What is {a} + {b}?", str(a + b)


def _fact(rng: random.Random) -> tuple[str, str]:
    town, country, river = made_up_name(rng, 2), made_up_name(rng, 3), made_up_name(rng, 2)
    year, direction = rng.randint(1000, 1990), rng.choice(DIRECTIONS)
    stated, asked = rng.sample([
        (f"{town} is in the {direction} of {country}.", f"In which part of {country} is {town}?", direction),
        (f"The river {river} flows through {town}.", f"Which river flows through {town}?", river),
        (f"{town} was founded in {year}.", f"When was {town} founded?", str(year))], 2)
    question, answer = rng.choice([stated, asked])[1:]
    return f"{stated[0]} {asked[0]} {question}", answer


def _upper(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return rng.choice([f"Write the word '{word}' in capital letters.", f"Answer in upper case: {word}"]), word.upper()


def _repeat(rng: random.Random) -> tuple[str, str]:
    word, n = rng.choice(WORDS), rng.randint(2, 3)
    return f"Repeat the word '{word}' {NUMBER_WORDS[n]} times.", " ".join([word] * n)


def _count(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(1, 9)
    b = a + rng.randint(2, 3)
    return f"List the numbers from {a} to {b}, separated by commas.", ", ".join(str(i) for i in range(a, b + 1))


_TASKS = {"arithmetic": _arithmetic, "fact": _fact, "upper": _upper, "repeat": _repeat, "count": _count}


def instruction_example(seed: int, index: int) -> Instruction:
    """The conversation number `index` of stream `seed`: an optional system prompt, sometimes an earlier
    (answered) exchange, then the question and its answer."""
    rng = random.Random(f"lmforge-instructions:{seed}:{index}")
    messages: list[dict] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if rng.random() < 0.25:  # multi-turn: an earlier exchange the model must not be confused by
        question, answer = _TASKS[rng.choice(KINDS)](rng)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    kind = rng.choice(KINDS)
    question, answer = _TASKS[kind](rng)
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return Instruction(tuple(messages), answer, kind)


def instruction_split(split: str, n: int, seed: int = 0) -> list[Instruction]:
    """n conversations of the train split (indices 0..n-1) or the held-out eval split (from EVAL_OFFSET)."""
    if split not in SPLITS:
        raise LmforgeError(f"split={split!r}; allowed: {', '.join(SPLITS)}")
    start = 0 if split == "train" else EVAL_OFFSET
    return [instruction_example(seed, start + i) for i in range(n)]


def prompt_key(messages) -> tuple:
    """What identifies a question: every message before the last assistant answer."""
    return tuple((m["role"], m["content"]) for m in messages[:-1])


def held_out_prompts(eval_examples: list[Instruction]) -> set[tuple]:
    return {prompt_key(e.messages) for e in eval_examples}
