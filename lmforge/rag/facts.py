"""An evaluation set of invented facts: towns and people that do not exist (names from a seeded syllable generator),
so no model can know the answers, with questions, gold answers and the gold passage of each answer, plus
distractor documents written from the same templates (other invented towns and people) and unrelated notes.

`write_fact_set(dir)` writes corpus/ (towns as .md, people as .txt, distractors as .jsonl) and questions.jsonl;
a question's gold chunk is any indexed chunk of its gold document whose offsets cover the gold sentence.
"""

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "t", "th", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "y"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "m", "nd", "rk"]
_EXPORTS = ["copper bells", "blue wool", "salted plums", "glass beads", "cedar barrels", "wax candles", "iron nails",
            "linen sails", "clay pipes", "dried figs", "silver thread", "oak saddles", "amber combs", "rope ladders"]
_JOBS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "astronomer", "bookbinder", "shipwright",
         "violinist", "stonemason", "herbalist", "locksmith", "weaver", "falconer", "potter"]
_NOTES = [
    "Bread rises faster in a warm kitchen because yeast is more active at higher temperatures.",
    "A bicycle chain should be cleaned and oiled every few hundred kilometres.",
    "Most houseplants prefer indirect light and soil that dries out between waterings.",
    "Compound interest grows savings because interest is paid on earlier interest.",
    "Stretching before running is less useful than a slow warm-up jog.",
    "Tea leaves release more bitterness when steeped in boiling water for a long time.",
]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    source: str  # the gold document's path relative to corpus/
    span: tuple[int, int]  # character offsets of the sentence holding the answer in that document


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).title()


def _unique_names(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        name = _name(rng, syllables)
        if name not in taken and len(name) >= 5:
            taken.add(name)
            out.append(name)
    return out


def _town(rng, town, founder, river):
    year, pop = rng.randint(1150, 1890), rng.randint(1200, 98000)
    export = rng.choice(_EXPORTS)
    sentences = {
        "intro": f"{town} is a small town on the banks of the river {river}.",
        "year": f"{town} was founded in the year {year} by {founder}.",
        "pop": f"The population of {town} is {pop:,} people.",
        "export": f"The main export of {town} is {export}.",
    }
    answers = {"year": str(year), "pop": f"{pop:,}", "export": export}
    return f"# {town}\n\n" + " ".join(sentences.values()) + "\n", sentences, answers


def _person(rng, person, town):
    year, job = rng.randint(1600, 1990), rng.choice(_JOBS)
    sentences = {
        "born": f"{person} was born in {year} in the town of {town}.",
        "job": f"{person} worked as a {job} for most of their life.",
    }
    return " ".join(sentences.values()) + "\n", sentences, {"born": str(year), "job": job}


_TOWN_QUESTIONS = {"year": "In what year was {x} founded?", "pop": "What is the population of {x}?",
                   "export": "What is the main export of {x}?"}
_PERSON_QUESTIONS = {"born": "In what year was {x} born?", "job": "What did {x} work as?"}


def fact_set(towns: int = 14, people: int = 12, distractors: int = 30, seed: int = 24):
    """({relative path: text} for the corpus, [Question]); the same arguments always give the same set."""
    rng = random.Random(seed)
    taken: set[str] = set()
    town_names = _unique_names(rng, towns + distractors, 3, taken)
    person_names = [f"{a} {b}" for a, b in zip(_unique_names(rng, people + distractors, 2, taken),
                                                _unique_names(rng, people + distractors, 2, taken), strict=True)]
    rivers = _unique_names(rng, towns + distractors, 2, taken)
    files, questions = {}, []
    for i, town in enumerate(town_names):
        text, sentences, answers = _town(rng, town, person_names[(i * 7) % len(person_names)], rivers[i])
        path = f"towns/{town.lower()}.md" if i < towns else f"more_towns/{town.lower()}.md"
        files[path] = text
        if i < towns:
            for key in rng.sample(sorted(_TOWN_QUESTIONS), 2):
                start = text.index(sentences[key])
                questions.append(Question(f"town{i}-{key}", _TOWN_QUESTIONS[key].format(x=town), answers[key], path,
                                          (start, start + len(sentences[key]))))
    for i, person in enumerate(person_names):
        text, sentences, answers = _person(rng, person, town_names[(i * 5) % len(town_names)])
        path = f"people/{person.lower().replace(' ', '_')}.txt"
        if i >= people:  # distractor people go in one JSONL file, one record each
            files.setdefault("notes.jsonl", "")
            files["notes.jsonl"] += json.dumps({"id": person, "text": text.strip()}) + "\n"
            continue
        files[path] = text
        key = rng.choice(sorted(_PERSON_QUESTIONS))
        start = text.index(sentences[key])
        questions.append(Question(f"person{i}-{key}", _PERSON_QUESTIONS[key].format(x=person), answers[key], path,
                                  (start, start + len(sentences[key]))))
    for j, note in enumerate(_NOTES):
        files["notes.jsonl"] = files.get("notes.jsonl", "") + json.dumps({"id": f"note{j}", "text": note}) + "\n"
    return files, questions


def write_fact_set(directory: str | Path, **kwargs) -> tuple[Path, Path]:
    """Write corpus/ and questions.jsonl under `directory`; returns (corpus dir, questions file)."""
    directory = Path(directory)
    files, questions = fact_set(**kwargs)
    for rel, text in files.items():
        path = directory / "corpus" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    qpath = directory / "questions.jsonl"
    qpath.write_text("".join(json.dumps(asdict(q)) + "\n" for q in questions))
    return directory / "corpus", qpath


def read_questions(path: str | Path) -> list[Question]:
    from lmforge.common.errors import LmforgeError

    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            out.append(Question(record["id"], record["question"], record["answer"], record["source"],
                                tuple(record["span"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise LmforgeError(f"{path}:{n} is not a question record (id, question, answer, source, span): "
                               f"{err}") from None
    return out


def normalize_answer(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"(?<=\d),(?=\d)", "", text.lower())).strip()


def is_correct(answer: str, gold: str) -> bool:
    """The gold answer appears in the model's answer (case, spacing and thousands separators ignored)."""
    return normalize_answer(gold) in normalize_answer(answer)
