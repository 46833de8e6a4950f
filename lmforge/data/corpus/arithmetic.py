"""Arithmetic with correct answers: drills ("12 + 7 = 19"), question/answer pairs and one-step word problems,
so that a small model can learn digit patterns whose answers are checkable.
"""

from __future__ import annotations

import random

from lmforge.data.corpus.words import BOYS, COUNTABLE, GIRLS


def _equation(rng: random.Random) -> str:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        return f"{a} * {b} = {a * b}"
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"
    return f"{a} + {b} = {a + b}"


def _word_problem(rng: random.Random) -> str:
    name = rng.choice(GIRLS + BOYS)
    thing = rng.choice(COUNTABLE)
    a, b = rng.randint(2, 20), rng.randint(1, 10)
    if rng.random() < 0.5:
        return (f"{name} has {a} {thing}. {name} gets {b} more {thing}. How many {thing} does {name} have now? "
                f"{a} + {b} = {a + b}. The answer is {a + b}.")
    a = a + b
    return (f"{name} has {a} {thing}. {name} gives away {b} {thing}. How many {thing} are left? "
            f"{a} - {b} = {a - b}. The answer is {a - b}.")


def arithmetic(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return "\n".join(_equation(rng) for _ in range(rng.randint(4, 10)))
    if kind < 0.7:
        lines = []
        for _ in range(rng.randint(2, 5)):
            eq = _equation(rng)
            question, answer = eq.rsplit(" = ", 1)
            lines.append(f"Q: What is {question}?\nA: {answer}")
        return "\n".join(lines)
    return " ".join(_word_problem(rng) for _ in range(rng.randint(1, 3)))
