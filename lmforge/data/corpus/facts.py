"""Facts about generated entities: an invented town with a region, population, river, food and trade, stated
and then asked about in the same document, so the answers are consistent within it (in-context recall).
"""

from __future__ import annotations

import random

from lmforge.data.corpus.words import DIRECTIONS, FOODS, JOBS, SYLLABLES


def made_up_name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def facts(rng: random.Random) -> str:
    town, country, river = made_up_name(rng, 2), made_up_name(rng, 3), made_up_name(rng, 2)
    direction, food, job = rng.choice(DIRECTIONS), rng.choice(FOODS), rng.choice(JOBS)
    people = rng.randint(2, 99) * 100
    founded = rng.randint(1000, 1990)
    stated = [
        (f"{town} is a town in the {direction} of {country}.", f"Where is {town}?",
         f"{town} is in the {direction} of {country}."),
        (f"About {people} people live in {town}.", f"How many people live in {town}?", f"About {people}."),
        (f"The river {river} flows through {town}.", f"Which river flows through {town}?", f"The river {river}."),
        (f"The people of {town} like to eat {food}.", f"What do people in {town} like to eat?", f"They eat {food}."),
        (f"Many people in {town} are {job}.", f"What work do many people in {town} do?", f"They are {job}."),
        (f"{town} was founded in {founded}.", f"When was {town} founded?", f"In {founded}."),
    ]
    rng.shuffle(stated)
    text = [s for s, _, _ in stated]
    asked = rng.sample(stated, rng.randint(2, 4))
    for _, question, answer in asked:
        text.append(f"Question: {question} Answer: {answer}")
    return " ".join(text)
