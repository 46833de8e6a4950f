"""Writes the generated task files under data/: a GSM8K-style word-problem set (reasoning, then `#### N`) and the
few-shot instruction set (held-out questions of lmforge's embedded SFT task, lmforge.data.tasks.instructions).
Deterministic; tests check the committed files equal its output. Run: python -m lmforge.eval.tasks.build_data
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmforge.data.tasks.instructions import instruction_split

DATA = Path(__file__).resolve().parent / "data"
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jia")
ITEMS = ("apples", "marbles", "stickers", "books", "shells", "cards")


def _word_problem(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(3, 20), rng.randint(2, 15)
        c = rng.randint(1, a + b - 1)
        r = a + b - c
        q = f"{name} has {a} {item}. {name} gets {b} more and then gives {c} to a friend. How many {item} does " \
            f"{name} have now?"
        s = f"{name} has {a} + {b} = {a + b} {item}. After giving {c} away, {name} has {a + b} - {c} = {r}."
    elif kind == 1:
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
        r = a * b + c
        q = f"A box holds {a} {item}. How many {item} are there in {b} boxes and {c} loose {item}?"
        s = f"{b} boxes hold {b} * {a} = {a * b} {item}. With {c} loose ones there are {a * b} + {c} = {r}."
    elif kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 7)
        t = a * b + rng.randint(5, 40)
        r = t - a * b
        q = f"{name} reads {a} pages a day for {b} days. The book has {t} pages. How many pages are left?"
        s = f"{name} reads {a} * {b} = {a * b} pages. {t} - {a * b} = {r} pages are left."
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 6)
        t = (a * b // 10 + 1) * 10 + rng.choice((0, 10))
        r = t - a * b
        q = f"Each ticket costs {a} dollars. {name} buys {b} tickets and pays with {t} dollars. How much change " \
            f"does {name} get?"
        s = f"The tickets cost {b} * {a} = {a * b} dollars. The change is {t} - {a * b} = {r} dollars."
    return {"question": q, "answer": f"{s}\n#### {r}"}


def word_problems(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"lmforge-gsm:{seed}")
    return [_word_problem(rng) for _ in range(n)]


def instructions(split: str, n: int) -> list[dict]:
    """The last question and answer of each conversation (system prompts and earlier turns dropped)."""
    return [{"question": ex.messages[-2]["content"], "answer": ex.answer, "kind": ex.kind}
            for ex in instruction_split(split, n)]


def files() -> dict[str, list[dict]]:
    return {"gsm_train.jsonl": word_problems(8, seed=1), "gsm_test.jsonl": word_problems(40, seed=2),
            "instruct_train.jsonl": instructions("train", 20), "instruct_test.jsonl": instructions("eval", 100)}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    for name, rows in files().items():
        (DATA / name).write_text(render(rows), encoding="utf-8")
        print(f"{DATA / name}: {len(rows)} rows")
