"""Grammar-built short stories in the style of TinyStories (Eldan & Li 2023): a hero with consistent name
and pronouns, a place, a found object or a problem, a friend who helps, and an ending with a moral.
"""

from __future__ import annotations

import random

from lmforge.data.corpus.words import (
    ACTIVITIES,
    ADJECTIVES,
    ANIMALS,
    BOYS,
    COLORS,
    FEELINGS_BAD,
    FEELINGS_GOOD,
    GIRLS,
    OBJECTS,
    PLACES,
    SPOTS,
)


def _character(rng: random.Random, avoid: str = "") -> tuple[str, str, str, str]:
    """(name, subject pronoun, object pronoun, possessive) with the pronouns agreeing with the name."""
    while True:
        girl = rng.random() < 0.5
        name = rng.choice(GIRLS if girl else BOYS)
        if name != avoid:
            return (name, "she", "her", "her") if girl else (name, "he", "him", "his")


def story(rng: random.Random) -> str:
    name, he, him, his = _character(rng)
    friend, fhe, _, _ = _character(rng, avoid=name)
    animal, adj, place = rng.choice(ANIMALS), rng.choice(ADJECTIVES), rng.choice(PLACES)
    obj, color, spot = rng.choice(OBJECTS), rng.choice(COLORS), rng.choice(SPOTS)
    good, bad, act = rng.choice(FEELINGS_GOOD), rng.choice(FEELINGS_BAD), rng.choice(ACTIVITIES)
    He = he.capitalize()
    opening = rng.choice((
        f"Once upon a time, there was a {adj} {animal} named {name}.",
        f"One day, a {adj} {animal} called {name} woke up early.",
        f"There once was a {adj} {animal}. {his.capitalize()} name was {name}.",
    ))
    parts = [opening, f"{name} lived in {place}.", f"Every day, {name} liked to {act}."]
    if rng.random() < 0.5:
        parts += [
            f"One day, {name} found a {color} {obj} {spot}.",
            f"{He} was very {good}.",
            rng.choice((f"{He} wanted to show the {obj} to {friend}.", f"{He} took the {obj} home.")),
            f"But then the {obj} fell into a hole.",
            f"{name} was {bad}. {He} could not reach it.",
            f"{friend} saw {him} and said, \"Do not be {bad}. I will help you.\"",
            f"{friend} found a long stick, and together they got the {obj} back.",
            f"{name} said, \"Thank you, {friend}!\" {He} was {good} again.",
        ]
        moral = "From that day on, they were best friends."
    else:
        parts += [
            f"One day, {name} wanted to {act} with {friend}.",
            f"But {friend} was {bad}, because {fhe} had lost {rng.choice(('a', 'the'))} {color} {obj}.",
            f"{name} said, \"Let us look for it together.\"",
            f"They looked {rng.choice([s for s in SPOTS if s != spot])}. Then they looked {spot}.",
            f"There it was! {friend} smiled and hugged {name}.",
            f"Then they went to {act} together, and they were both {good}.",
        ]
        moral = rng.choice(("Helping a friend makes everyone happy.", "The end.", "It was a good day."))
    parts.append(moral)
    return " ".join(parts)
