"""Simple Python snippets whose printed results are computed here and written as comments, so the code and
its output agree: small functions, loops with accumulators, list comprehensions and conditionals.
"""

from __future__ import annotations

import random

NAMES = ("total", "count", "value", "result", "acc", "score")
FUNCS = ("add", "double", "square", "triple", "inc")


def _function(rng: random.Random) -> str:
    f = rng.choice(FUNCS)
    k = rng.randint(1, 9)
    body, fn = {
        "add": (f"x + {k}", lambda x: x + k),
        "double": ("x * 2", lambda x: x * 2),
        "square": ("x * x", lambda x: x * x),
        "triple": ("x * 3", lambda x: x * 3),
        "inc": ("x + 1", lambda x: x + 1),
    }[f]
    name = f"{f}_{k}" if f == "add" else f
    calls = "\n".join(f"print({name}({x}))  # {fn(x)}" for x in rng.sample(range(20), rng.randint(1, 3)))
    return f"def {name}(x):\n    return {body}\n\n{calls}"


def _loop(rng: random.Random) -> str:
    var, n = rng.choice(NAMES), rng.randint(2, 10)
    if rng.random() < 0.5:
        return f"{var} = 0\nfor i in range({n}):\n    {var} += i\nprint({var})  # {sum(range(n))}"
    step = rng.randint(2, 5)
    return f"{var} = 1\nfor i in range({n}):\n    {var} = {var} * {step}\nprint({var})  # {step ** n}"


def _comprehension(rng: random.Random) -> str:
    n, m = rng.randint(3, 8), rng.randint(2, 4)
    values = [i * m for i in range(n)]
    return f"xs = [i * {m} for i in range({n})]\nprint(xs)  # {values}\nprint(sum(xs))  # {sum(values)}"


def _conditional(rng: random.Random) -> str:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    bigger = "a" if a > b else "b"
    return (f"a = {a}\nb = {b}\nif a > b:\n    print(\"a\")\nelse:\n    print(\"b\")\n# prints {bigger}")


def code(rng: random.Random) -> str:
    makers = (_function, _loop, _comprehension, _conditional)
    return "\n\n".join(rng.choice(makers)(rng) for _ in range(rng.randint(1, 3)))
