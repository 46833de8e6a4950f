"""Labelled sets for the model-based steps, written beside the sample corpus: `quality_labels.jsonl` (the corpus's
English pages, "good" prose vs "bad" spam / boilerplate, from its ground truth) and `toxicity_labels.jsonl`
(synthetic short comments, "toxic" insults and threats vs "clean" ones, civil complaints included as hard
negatives) with `toxicity_heldout.jsonl` built from templates and words the training file never uses, so its
precision and recall measure generalisation, not memory. Deterministic for a seed; trains in seconds."""

from __future__ import annotations

import random

INSULT_ADJ = ("stupid", "pathetic", "worthless", "disgusting", "brainless", "useless", "miserable", "dumb")
INSULT_NOUN = ("idiot", "moron", "loser", "clown", "fool", "jerk", "creep", "failure")
TOXIC = (
    "you are a {a} {n}", "shut up, you {a} {n}", "nobody wants you here, {n}", "I will hurt you, {n}",
    "get lost, you {n}", "what a {a} {n} you are", "go to hell, {n}", "people like you are {a} trash",
    "I hope you suffer, {n}", "you {a} {n}, nobody cares what you think", "I know where you live, {n}",
)
TOPIC = ("the new tax plan", "this phone", "the last episode", "the referee", "your proposal", "the update",
         "the hotel", "the train schedule", "the recipe", "the movie")
CLEAN = (
    "I disagree with you about {t}", "{t} is terrible and broke after a week", "thanks for explaining {t}",
    "honestly {t} was a disappointment", "could you share a source for {t}", "I think {t} needs more work",
    "{t} was awful, I want a refund", "great point about {t}", "I was wrong about {t}, sorry",
    "{t} is the worst I have seen this year", "can we talk about {t} tomorrow",
)


def _split(items: tuple[str, ...], heldout: bool, k: int) -> tuple[str, ...]:
    return items[-k:] if heldout else items[:-k]


def toxicity_samples(n: int = 600, seed: int = 0, heldout: bool = False) -> list[dict]:
    """n comments, half toxic: one or two clean sentences and, for toxic ones, an insult or threat. `heldout`
    draws from the last 3 templates of each kind and the last 2 insult words and topics, which training omits."""
    rng = random.Random(seed + heldout)
    toxic, clean = _split(TOXIC, heldout, 3), _split(CLEAN, heldout, 3)
    adj, noun, topic = _split(INSULT_ADJ, heldout, 2), _split(INSULT_NOUN, heldout, 2), _split(TOPIC, heldout, 2)
    out = []
    for i in range(n):
        sentences = [rng.choice(clean).format(t=rng.choice(topic)) for _ in range(rng.randint(0, 2))]
        label = "toxic" if i % 2 else "clean"
        if label == "toxic":
            sentences.insert(rng.randint(0, len(sentences)),
                             rng.choice(toxic).format(a=rng.choice(adj), n=rng.choice(noun)))
        elif not sentences:
            sentences = [rng.choice(clean).format(t=rng.choice(topic))]
        text = ". ".join(s[0].upper() + s[1:] for s in sentences) + "."
        out.append({"id": f"{'heldout' if heldout else 'comment'}-{i:05d}", "text": text, "label": label})
    rng.shuffle(out)
    return out


def quality_samples(records: list[dict], truth: list[dict]) -> list[dict]:
    """The sample corpus's English pages labelled "good" (prose) or "bad" (spam and boilerplate kinds)."""
    out = []
    for record, t in zip(records, truth, strict=True):
        if t["kind"] == "good" or t["kind"].startswith("spam:"):
            out.append({"id": record["id"], "text": record["text"], "label": "good" if t["kind"] == "good" else "bad"})
    return out
