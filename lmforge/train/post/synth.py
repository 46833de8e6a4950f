"""Self-Instruct (Wang et al., 2023, "Self-Instruct: Aligning Language Models with Self-Generated Instructions"):
a local model, shown a few tasks from the seed pool, writes a new task and then answers it; a pair is kept only if
it is not an exact or near duplicate (MinHash, data/minhash.py) of the pool and passes a verifier (a reward function
of train/post/rewards.py: a regex, JSON-valid or the user's own check). Every drop is counted by its reason.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.common.jsonl import read_jsonl
from lmforge.data.minhash import MinHashConfig, MinHashDeduper
from lmforge.train.post.rewards import Reward, RewardErrors, call_isolated

# messages per conversation -> one text each (sampling is the caller's: the engine's batched generate)
Generate = Callable[[list[list[dict]]], list[str]]
REASONS = ("empty", "exact_duplicate", "near_duplicate", "verifier", "surplus")
PROMPT = ("Here are some example tasks:\n{examples}\nWrite one new task, different from these but of the same kind. "
          "Reply with the task only.")


def read_seeds(path: str | Path) -> list[dict]:
    """Seed tasks: JSON lines with an `instruction` (or `prompt`) and optionally an `output`, or chat `messages`
    (the first user turn is the task, the last assistant turn its answer)."""
    if not Path(path).is_file():
        raise LmforgeError(f"seed file not found: {path}")
    return read_jsonl(path, _seed, what="seed file", items="seed tasks")


def _seed(record, where: str) -> dict:
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        turns = [m for m in record["messages"] if isinstance(m, dict) and isinstance(m.get("content"), str)]
        user = [m["content"] for m in turns if m.get("role") == "user"]
        answer = [m["content"] for m in turns if m.get("role") == "assistant"]
        if user:
            return {"instruction": user[0], "output": answer[-1] if answer else ""}
    if isinstance(record, dict):
        text = record.get("instruction", record.get("prompt"))
        if isinstance(text, str) and text.strip():
            output = record.get("output", record.get("completion", ""))
            return {"instruction": text, "output": output if isinstance(output, str) else ""}
    raise LmforgeError(f"{where}: a seed needs a string 'instruction' (or 'prompt') or chat 'messages' with a user "
                       f"turn")


def normalize(text: str) -> str:
    """What exact duplicates share: lower case, runs of whitespace and punctuation as one space."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


class DuplicateFilter:
    """Exact duplicates (normalized text) and near duplicates (estimated word-bigram Jaccard of MinHash signatures
    >= max_jaccard) of every text added so far."""

    def __init__(self, max_jaccard: float = 0.7, ngram: int = 2) -> None:
        if not 0 < max_jaccard <= 1:
            raise LmforgeError(f"--max-jaccard {max_jaccard} must be in (0, 1]")
        self.max_jaccard = max_jaccard
        self.minhash = MinHashDeduper(MinHashConfig(ngram=ngram, bands=16, rows=8))
        self.seen: set[str] = set()
        self.signatures = np.zeros((0, self.minhash.config.num_perm), dtype=np.uint32)

    def reason(self, text: str) -> str | None:
        if normalize(text) in self.seen:
            return "exact_duplicate"
        if len(self.signatures):
            sig = self.minhash.signatures([text])[0]
            if float((self.signatures == sig).mean(axis=1).max()) >= self.max_jaccard:
                return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        self.seen.add(normalize(text))
        self.signatures = np.concatenate([self.signatures, self.minhash.signatures([text])])


@dataclass
class SynthResult:
    kept: list[dict] = field(default_factory=list)  # {"instruction", "output"}
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    generated: int = 0


def synthesize(generate: Generate, seeds: Sequence[dict], n: int, verifier: Reward | None = None,
               min_reward: float = 1.0, examples: int = 3, batch_size: int = 8, max_tries: int | None = None,
               max_jaccard: float = 0.7, seed: int = 0, errors: RewardErrors | None = None,
               progress: Callable[[int, int], None] | None = None) -> SynthResult:
    """Up to n new (instruction, output) pairs, generated batch_size at a time until n are kept or max_tries
    (default 4 n) candidates were made. Examples shown to the model are drawn from the seeds and the pairs kept."""
    if n < 1 or batch_size < 1 or examples < 1:
        raise LmforgeError(f"--n ({n}), --batch-size ({batch_size}) and --examples ({examples}) must be >= 1")
    max_tries = 4 * n if max_tries is None else max_tries
    rng, result = random.Random(seed), SynthResult()
    dup = DuplicateFilter(max_jaccard)
    for s in seeds:
        dup.add(s["instruction"])
    pool = [s["instruction"] for s in seeds]
    errors = errors or RewardErrors()
    while len(result.kept) < n and result.generated < max_tries:
        size = min(batch_size, max_tries - result.generated)
        asks = []
        for _ in range(size):
            shown = rng.sample(pool, min(examples, len(pool)))
            listing = "\n".join(f"{i}. {t}" for i, t in enumerate(shown, start=1))
            asks.append([{"role": "user", "content": PROMPT.format(examples=listing)}])
        instructions = [t.strip() for t in generate(asks)]
        answers = generate([[{"role": "user", "content": t}] for t in instructions])
        rewards = (call_isolated(verifier, instructions, [a.strip() for a in answers], {}, errors)
                   if verifier is not None else [None] * size)
        result.generated += size
        for text, answer, reward in zip(instructions, answers, rewards, strict=True):
            reason = "empty" if not text or not answer.strip() else dup.reason(text)
            if reason is None and reward is not None and reward < min_reward:
                reason = "verifier"
            if reason is None and len(result.kept) == n:
                reason = "surplus"  # passed every filter after n were kept (the last batch's extra)
            if reason is not None:
                result.dropped[reason] += 1
                continue
            dup.add(text)
            pool.append(text)
            result.kept.append({"instruction": text, "output": answer.strip()})
        if progress is not None:
            progress(len(result.kept), result.generated)
    return result
