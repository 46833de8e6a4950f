"""Labelled sets the project writes for `lmforge classify train` when no --data is given: short product reviews
whose sentiment a negation can flip (sequence classification), and sentences with people, places and companies
tagged in BIO (token classification / named-entity recognition, CoNLL-2003's scheme). Deterministic in
(seed, split, index); a sentence is held out by a stable hash of its text, so no held-out text is trained on.
"""

from __future__ import annotations

import random

from lmforge.common.errors import LmforgeError

_SUBJECTS = ["the film", "the soup", "this phone", "the hotel", "the book", "our guide", "the service", "the game",
             "this laptop", "the concert", "the coffee", "the new album", "the room", "the driver", "the app"]
_GOOD = ["good", "great", "excellent", "lovely", "wonderful", "fun", "helpful", "fantastic", "pleasant", "superb"]
_BAD = ["bad", "awful", "terrible", "boring", "poor", "horrible", "rude", "dull", "broken", "disappointing"]
_FILLERS = ["", "", "honestly ", "overall ", "to be fair ", "i think "]
_ADVERBS = ["", "", "really ", "very ", "quite "]

_PEOPLE = [["Anna", "Smith"], ["John"], ["Maria", "Lopez"], ["Ken", "Sato"], ["Olga"], ["Peter", "Brown"],
           ["Amara", "Okafor"], ["Liam"], ["Sofia", "Rossi"], ["Chen", "Wei"], ["Fatima"], ["Noah", "Klein"]]
_PLACES = [["Paris"], ["New", "York"], ["Lagos"], ["Tokyo"], ["San", "Francisco"], ["Berlin"], ["Lima"],
           ["Cape", "Town"], ["Oslo"], ["Buenos", "Aires"], ["Madrid"], ["Hanoi"]]
_COMPANIES = [["Acme", "Corp"], ["Globex"], ["Blue", "River", "Bank"], ["Initech"], ["Northwind"],
              ["Stark", "Industries"], ["Umbrella"], ["Green", "Leaf", "Foods"], ["Vandelay"], ["Hooli"]]
_TEMPLATES = ["{PER} lives in {LOC} .", "{PER} works for {ORG} in {LOC} .", "yesterday {PER} visited {LOC} .",
              "{ORG} hired {PER} last year .", "{ORG} opened an office in {LOC} .", "we met {PER} at {ORG} .",
              "{PER} and {PER} flew to {LOC} .", "the team from {ORG} moved to {LOC} .", "{PER} left {ORG} ."]
SEQUENCE_LABELS = ("negative", "positive")
TOKEN_TAGS = ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")


def review(rng: random.Random) -> dict:
    """{"text", "label"}: a one-sentence review; "not" before the adjective flips its sentiment."""
    positive, negated = rng.random() < 0.5, rng.random() < 0.35
    words = _GOOD if positive != negated else _BAD
    verb = rng.choice(["was", "is"]) + (" not" if negated else "")
    text = f"{rng.choice(_FILLERS)}{rng.choice(_SUBJECTS)} {verb} {rng.choice(_ADVERBS)}{rng.choice(words)} ."
    return {"text": text, "label": SEQUENCE_LABELS[positive]}


def entity_sentence(rng: random.Random) -> dict:
    """{"tokens", "tags"}: a templated sentence, its entities tagged B-/I-TYPE, the rest O."""
    tokens, tags = [], []
    for word in rng.choice(_TEMPLATES).split():
        pool = {"{PER}": _PEOPLE, "{LOC}": _PLACES, "{ORG}": _COMPANIES}.get(word)
        if pool is None:
            tokens.append(word)
            tags.append("O")
            continue
        entity, kind = rng.choice(pool), word[1:4]
        tokens += entity
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
    return {"tokens": tokens, "tags": tags}


def _key(example: dict) -> str:
    return example["text"] if "text" in example else " ".join(example["tokens"])


def is_heldout(example: dict, mod: int = 5) -> bool:
    return random.Random(f"heldout:{_key(example)}").randrange(mod) == 0


def labelled_examples(task: str, n: int, split: str, seed: int = 0) -> list[dict]:
    """n distinct examples of the embedded set of `task` ("sequence" or "token") from `split`."""
    if split not in ("train", "heldout"):
        raise LmforgeError(f"split must be 'train' or 'heldout', got {split!r}")
    make = review if task == "sequence" else entity_sentence
    out, seen = [], set()
    rng = random.Random(f"{seed}:{task}")
    for _ in range(200 * n + 1000):
        example = make(rng)
        key = _key(example)
        if key not in seen and is_heldout(example) == (split == "heldout"):
            seen.add(key)
            out.append(example)
            if len(out) == n:
                return out
    return out  # the set holds fewer distinct examples than asked for
