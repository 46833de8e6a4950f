"""The embedded synthetic corpus: deterministic per (seed, index), arithmetic answers correct, code snippets
print what their comments say (checked by running them), entity facts answered consistently."""

import contextlib
import io
import math
import re

import numpy as np

from lmforge.data.corpus import CorpusConfig, corpus_documents, document_text, unigram_entropy


def _docs(kind, n=300, seed=5):
    out = [d.text for d in corpus_documents(CorpusConfig(documents=4000, seed=seed)) if d.meta["kind"] == kind]
    assert len(out) >= 50
    return out[:n]


def test_deterministic_and_seeded():
    assert document_text(1, 17) == document_text(1, 17)
    assert [document_text(1, i) for i in range(50)] != [document_text(2, i) for i in range(50)]
    kinds = {d.meta["kind"] for d in corpus_documents(CorpusConfig(documents=200))}
    assert kinds == {"story", "arithmetic", "facts", "code"}


def test_arithmetic_is_correct():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    checked = 0
    for text in _docs("arithmetic"):
        for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", text):
            assert ops[op](int(a), int(b)) == int(c), text
            checked += 1
        for a, op, b, c in re.findall(r"Q: What is (\d+) ([-+*]) (\d+)\?\nA: (\d+)", text):
            assert ops[op](int(a), int(b)) == int(c), text
            checked += 1
    assert checked > 500


def test_code_prints_what_its_comments_say():
    for text in _docs("code", n=100):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(compile(text, "<corpus>", "exec"), {})  # our own generated snippets
        printed = stdout.getvalue().split()
        claimed = [c.strip() for c in re.findall(r"# (?:prints )?(.+)", text)]
        assert " ".join(printed) == " ".join(claimed), text


def test_facts_are_consistent_within_a_document():
    for text in _docs("facts"):
        town = re.match(r".*?(\w+) is a town in the (\w+) of (\w+)\.", text)
        assert town, text
        name, direction, country = town.groups()
        people = re.search(r"About (\d+) people live in", text).group(1)
        river = re.search(r"The river (\w+) flows through", text).group(1)
        for question, answer in re.findall(r"Question: (.+?) Answer: (.+?)(?= Question:|$)", text):
            if question.startswith("Where"):
                assert answer == f"{name} is in the {direction} of {country}."
            elif question.startswith("How many"):
                assert answer == f"About {people}."
            elif question.startswith("Which river"):
                assert answer == f"The river {river}."


def test_unigram_entropy_closed_form():
    assert math.isclose(unigram_entropy(np.arange(8), 8), math.log(8))
    p = np.array([1 / 3, 2 / 3])
    assert math.isclose(unigram_entropy(np.array([0, 0, 1, 1, 1, 1]), 5), float(-(p * np.log(p)).sum()))
