"""Preference pairs {prompt, chosen, rejected} for reward models and the DPO family (Ouyang et al., 2022;
Rafailov et al., 2023): an embedded generator, a pure function of (seed, index), with kinds a 1M-parameter model
can learn (a correct sum vs a wrong one, the asked format vs another, a coherent answer vs a shuffled one), a
held-out split disjoint by prompt, and a reader of users' JSONL pairs.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus.words import ANIMALS, BOYS, COLORS, FOODS, GIRLS, OBJECTS, PLACES

KINDS = ("arithmetic", "uppercase", "one_word", "coherence")
SPLITS = ("train", "heldout")
HELDOUT_EVERY = 5  # a pair is held out when crc32(prompt + chosen) % HELDOUT_EVERY == 0: no pair is in both splits


@dataclass(frozen=True)
class PreferencePair:
    """prompt: chat messages before the answer; chosen / rejected: the two assistant answers."""

    prompt: tuple[dict, ...]
    chosen: str
    rejected: str
    kind: str = "user"

    def prompt_text(self) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)


def _ask(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    right = a + b
    wrong = right + rng.choice((-3, -2, -1, 1, 2, 3, 10))
    wrong = wrong if wrong >= 0 else right + 1
    return f"What is {a} + {b}?", f"{a} + {b} = {right}.", f"{a} + {b} = {wrong}."


def _uppercase(rng: random.Random) -> tuple[str, str, str]:
    name, thing, color = rng.choice(GIRLS + BOYS), rng.choice(ANIMALS + OBJECTS), rng.choice(COLORS)
    return (f"Answer in capital letters. What color is the {thing} of {name}? (It is {color}.)", color.upper() + ".",
            color.capitalize() + ".")


def _one_word(rng: random.Random) -> tuple[str, str, str]:
    name, food = rng.choice(GIRLS + BOYS), rng.choice(FOODS)
    question = rng.choice(("What does {n} like to eat?", "What food does {n} want?", "What is {n} eating?"))
    return (f"Answer in one word. {question.format(n=name)} ({name} likes {food}.)", food.capitalize() + ".",
            f"{name} likes to eat {food} every day.")


def _coherence(rng: random.Random) -> tuple[str, str, str]:
    name, obj, place, color = rng.choice(GIRLS + BOYS), rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(COLORS)
    article = "an" if color[0] in "aeiou" else "a"
    answer = f"{name} lived in {place}. One day {name} found {article} {color} {obj} and was very happy."
    words = answer.rstrip(".").split()
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return f"Tell me a short story about {name}.", answer, " ".join(shuffled) + "."


MAKERS = {"arithmetic": _arithmetic, "uppercase": _uppercase, "one_word": _one_word, "coherence": _coherence}


def preference_pair(seed: int, index: int, kinds: tuple[str, ...] = KINDS) -> PreferencePair:
    """Pair `index` of the stream with `seed`: its kind and content depend on nothing else."""
    bad = [k for k in kinds if k not in MAKERS]
    if bad or not kinds:
        raise LmforgeError(f"unknown preference kinds {bad or kinds!r}; allowed: {', '.join(KINDS)}")
    rng = random.Random(seed * 1_000_003 + index)
    kind = kinds[index % len(kinds)]
    question, chosen, rejected = MAKERS[kind](rng)
    return PreferencePair(prompt=_ask(question), chosen=chosen, rejected=rejected, kind=kind)


def _key(pair: PreferencePair) -> int:
    return zlib.crc32((pair.prompt_text() + "\n" + pair.chosen).encode())


def is_heldout(pair: PreferencePair) -> bool:
    return _key(pair) % HELDOUT_EVERY == 0


def preference_pairs(n: int, split: str = "train", seed: int = 0, kinds: tuple[str, ...] = KINDS,
                     start: int = 0) -> list[PreferencePair]:
    """The first n pairs of `split` (from stream index `start` on): no held-out (prompt, chosen) is a training
    one, so a held-out figure measures generalisation, not recall."""
    if split not in SPLITS:
        raise LmforgeError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    want_heldout = split == "heldout"
    out, index = [], start
    while len(out) < n:
        pair = preference_pair(seed, index, kinds)
        if is_heldout(pair) == want_heldout:
            out.append(pair)
        index += 1
        if index - start > 1000 * (n + 10):
            raise LmforgeError(f"could not draw {n} {split} pairs of kinds {kinds}: too few distinct prompts")
    return out


def _messages(value, where: str) -> tuple[dict, ...]:
    if isinstance(value, str):
        return _ask(value)
    if not isinstance(value, list) or not value:
        raise LmforgeError(f"{where}: 'prompt' must be a string or a non-empty list of chat messages")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise LmforgeError(f"{where}: each prompt message needs string 'role' and 'content', got {m!r:.80}")
    if value[-1]["role"] == "assistant":
        raise LmforgeError(f"{where}: the prompt must end before the answer (its last message is the assistant's)")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def read_preference_jsonl(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file of {"prompt": str or chat messages, "chosen": str, "rejected": str}."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"no such preference file: {path}")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LmforgeError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise LmforgeError(f"{where}: each line must be a JSON object with prompt, chosen and rejected")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise LmforgeError(f"{where}: missing {', '.join(missing)} (need prompt, chosen, rejected)")
        for key in ("chosen", "rejected"):
            if not isinstance(record[key], str) or not record[key]:
                raise LmforgeError(f"{where}: {key!r} must be a non-empty string")
        pairs.append(PreferencePair(_messages(record["prompt"], where), record["chosen"], record["rejected"]))
    if not pairs:
        raise LmforgeError(f"{path} holds no preference pairs")
    return pairs


def split_pairs(pairs: list[PreferencePair], heldout_fraction: float = 0.2) -> tuple[list, list]:
    """(train, heldout) of user pairs, by a hash of (prompt, chosen): deterministic, no pair on both sides."""
    buckets = max(round(1 / heldout_fraction), 2) if heldout_fraction > 0 else 0
    if not buckets:
        return pairs, []
    heldout = [p for p in pairs if _key(p) % buckets == 0]
    train = [p for p in pairs if _key(p) % buckets != 0]
    if not train or not heldout:
        cut = max(1, round(len(pairs) * (1 - heldout_fraction)))
        train, heldout = pairs[:cut], pairs[cut:] or pairs[-1:]
    return train, heldout
