"""Reward functions for RL on the user's own prompts, as TRL's GRPOTrainer takes them (reward_funcs): plain callables
`fn(prompts, completions, **columns) -> list[float]`, loaded from `module:function` or `file.py:function`, plus the
built-in verifiers of DeepSeek-R1 / DAPO-style verifiable rewards (exact answer, numeric answer, regex, JSON-valid,
length penalty), summed with weights. A function that raises on a sample costs that sample its reward (0), is
logged per sample (reward_errors.jsonl and a line on the log), and the run goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.tasks.verifiable import END_MARKERS

# fn(prompts=[...], completions=[...], **columns) -> one float (or None: no opinion, counted as 0) per completion
RewardFunction = Callable[..., Sequence[float | None]]
SHOWN_ERRORS = 5  # errors printed in full on the log; the rest only in reward_errors.jsonl and the count
FILED_ERRORS = 1000  # errors written to reward_errors.jsonl; past these, only counted (the file stays bounded)


def answer_of(completion: str) -> str:
    """The completion up to its first end-of-text / end-of-turn marker (what a user's function is given)."""
    cut = min((at for m in END_MARKERS if (at := completion.find(m)) >= 0), default=len(completion))
    return completion[:cut]


def _per_sample(check: Callable[[str, dict], float]) -> RewardFunction:
    """A RewardFunction from check(completion, record's columns) -> float."""
    def fn(prompts, completions, **columns):
        return [check(c, {k: v[i] for k, v in columns.items()}) for i, c in enumerate(completions)]
    return fn


def _number(text: str) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text.replace(",", ""))
    return float(match.group()) if match else None


def exact_reward(arg: str | None) -> RewardFunction:
    """1 when the stripped answer equals the record's `answer` column (as text), else 0."""
    return _per_sample(lambda c, row: float(c.strip() == str(row["answer"]).strip()))


def numeric_reward(arg: str | None) -> RewardFunction:
    """1 when the answer's first number equals the `answer` column (relative tolerance 1e-6), else 0."""
    def check(c: str, row: dict) -> float:
        got, want = _number(c), float(row["answer"])
        return float(got is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want)))
    return _per_sample(check)


def regex_reward(arg: str | None) -> RewardFunction:
    """1 when the pattern (regex=PATTERN, else the record's `pattern` column) is found in the answer, else 0."""
    fixed = _compile(arg) if arg else None
    return _per_sample(lambda c, row: float((fixed or _compile(row["pattern"])).search(c) is not None))


def json_reward(arg: str | None) -> RewardFunction:
    """1 when the answer is valid JSON (json=KEY,KEY: a JSON object holding those keys), else 0."""
    keys = [k for k in (arg or "").split(",") if k]

    def check(c: str, row: dict) -> float:
        try:
            value = json.loads(c.strip())
        except ValueError:
            return 0.0
        return float(not keys or (isinstance(value, dict) and all(k in value for k in keys)))
    return _per_sample(check)


def length_reward(arg: str | None) -> RewardFunction:
    """A length penalty: 0 up to N characters (length=N, default 64), then -(chars - N) / N, floored at -1."""
    limit = _positive_int(arg or "64", "length")
    return _per_sample(lambda c, row: -min(1.0, max(0, len(c.strip()) - limit) / limit))


# name -> (factory(arg), the prompt-file columns it reads (regex: only without =PATTERN))
BUILTINS: dict[str, tuple[Callable[[str | None], RewardFunction], tuple[str, ...]]] = {
    "exact": (exact_reward, ("answer",)), "numeric": (numeric_reward, ("answer",)),
    "regex": (regex_reward, ("pattern",)), "json": (json_reward, ()), "length": (length_reward, ())}


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise LmforgeError(f"--reward regex: {pattern!r} is not a valid regular expression ({err})") from None


def _positive_int(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise LmforgeError(f"--reward {name}={text}: expected a positive integer")
    return int(text)


@dataclass(frozen=True)
class Reward:
    """One weighted term of the reward: its name (as given), the function, its weight, the columns it needs."""

    name: str
    fn: RewardFunction
    weight: float = 1.0
    columns: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A short metric name: the function's name, or the built-in spec as a word (json=answer -> json_answer)."""
        name = self.name.rpartition(":")[2] if self.name.partition("=")[0] not in BUILTINS else self.name
        return re.sub(r"\W+", "_", name).strip("_") or "reward"


def parse_reward(spec: str) -> Reward:
    """`NAME[=ARG][@WEIGHT]` (a built-in) or `module:function[@WEIGHT]` / `path/file.py:function[@WEIGHT]`."""
    text, weight = spec.strip(), 1.0
    head, _, tail = text.rpartition("@")
    if head and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?inf|nan", tail):  # else an @ of a regex
        text, weight = head, float(tail)
    if not math.isfinite(weight):
        raise LmforgeError(f"--reward {spec!r}: the weight must be a finite number")
    name, _, arg = text.partition("=")
    if name in BUILTINS:
        factory, columns = BUILTINS[name]
        return Reward(text, factory(arg or None), weight, () if name == "regex" and arg else columns)
    if ":" not in text:
        raise LmforgeError(f"--reward {spec!r} is neither a built-in ({', '.join(BUILTINS)}) nor module:function "
                           f"(or path/file.py:function)")
    return Reward(text, load_function(text), weight)


def load_function(target: str) -> RewardFunction:
    """The function `target` names: `package.module:function` (importable, the working directory included) or
    `path/to/file.py:function`; a user's file runs here, as a Python import does."""
    module_name, _, attr = target.rpartition(":")
    try:
        if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise LmforgeError(f"--reward {target}: no such file {path}")
            spec = importlib.util.spec_from_file_location(f"lmforge_user_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(os.getcwd())
    except LmforgeError:
        raise
    except Exception as err:  # the user's module failed to import: say which and why, in one line
        raise LmforgeError(f"--reward {target}: cannot import {module_name}: {type(err).__name__}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise LmforgeError(f"--reward {target}: {module_name} has no function {attr!r}")
    return fn


class RewardErrors:
    """Where the samples a reward function raised on go: one JSON line each in `path` (when given), the first
    SHOWN_ERRORS on the log, and a count."""

    def __init__(self, path: Path | None = None, log: Callable[[str], None] = print):
        self.path, self.log, self.count = path, log, 0

    def add(self, name: str, prompt: str, completion: str, error: str) -> None:
        self.count += 1
        if self.path is not None and self.count <= FILED_ERRORS:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"reward": name, "prompt": prompt, "completion": completion, "error": error}) + "\n")
            if self.count == FILED_ERRORS:
                self.log(f"warning: {FILED_ERRORS} reward errors written to {self.path}; further ones are only counted")
        if self.count <= SHOWN_ERRORS:
            more = "; further ones only in the file" if self.count == SHOWN_ERRORS else ""
            where = f" (logged in {self.path}{more})" if self.path is not None else ""
            self.log(f"warning: reward {name} failed on a sample, which gets 0 from it: {error}{where}")


def _values(result, n: int) -> list[float | None]:
    """A reward function's result as n numbers (None kept); anything else raises."""
    values = list(result.tolist() if hasattr(result, "tolist") else result)
    if len(values) != n:
        raise ValueError(f"returned {len(values)} values for {n} completions")
    return [None if v is None else float(v) for v in values]


def call_isolated(reward: Reward, prompts: list, completions: list[str], columns: dict[str, list],
                  errors: RewardErrors) -> list[float]:
    """reward.fn on the batch; if it raises, on each sample alone, so one bad sample costs only its own reward.
    A sample whose call raises, or whose value is not a finite number, gets 0 and is logged."""
    try:
        values = _values(reward.fn(prompts=prompts, completions=completions, **columns), len(completions))
    except Exception:
        values = []
        for i in range(len(completions)):
            try:
                values += _values(reward.fn(prompts=[prompts[i]], completions=[completions[i]],
                                            **{k: [v[i]] for k, v in columns.items()}), 1)
            except Exception as err:
                errors.add(reward.name, str(prompts[i]), completions[i], f"{type(err).__name__}: {err}")
                values.append(0.0)
                continue
    out = []
    for i, value in enumerate(values):
        if value is not None and not math.isfinite(value):
            errors.add(reward.name, str(prompts[i]), completions[i], f"non-finite reward {value}")
            value = 0.0
        out.append(0.0 if value is None else value)
    return out


class CombinedReward:
    """The weighted sum of the rewards, as a RewardFn of the rollouts (records, completion texts) -> [B] tensor.
    Each function sees the prompts, the completions cut at their end marker, and every other column of the
    records. `term(name)`: one term alone (unweighted), for the held-out report."""

    def __init__(self, rewards: Sequence[Reward], errors: RewardErrors):
        if not rewards:
            raise LmforgeError("no reward function given (--reward NAME or module:function)")
        self.rewards, self.errors = list(rewards), errors

    def scores(self, records: Sequence[dict], texts: Sequence[str], rewards: Sequence[Reward]) -> list[list[float]]:
        prompts = [r["prompt"] for r in records]
        completions = [answer_of(t) for t in texts]
        columns = {k: [r.get(k) for r in records] for k in sorted({k for r in records for k in r}) if k != "prompt"}
        return [call_isolated(reward, prompts, completions, columns, self.errors) for reward in rewards]

    def __call__(self, records: Sequence[dict], texts: Sequence[str]):
        import torch

        per_term = self.scores(records, texts, self.rewards)
        totals = [sum(r.weight * s[i] for r, s in zip(self.rewards, per_term, strict=True))
                  for i in range(len(texts))]
        return torch.tensor(totals, dtype=torch.float32)

    def term(self, reward: Reward):
        import torch

        return lambda records, texts: torch.tensor(self.scores(records, texts, [reward])[0], dtype=torch.float32)
