"""LLM-as-judge, MT-Bench style ("Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", Zheng et al. 2023):
single-answer grading (a 1-10 score parsed from "[[rating]]") and pairwise comparison with position swap (each pair
asked in both orders; a verdict counts only when both orders agree, else it is a tie). Against labelled
(question, good, bad) triples: pairwise accuracy, swap consistency and position bias. A judge is any callable from a
batch of chat conversations to answers: an lmforge model on the engine (greedy) or an OpenAI-compatible endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from lmforge.common.errors import LmforgeError

Judge = Callable[[list[list[dict]]], list[str]]  # conversations in, one answer each out

SINGLE_SYSTEM = "You are a helpful assistant."
SINGLE_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by providing a "
    "short explanation. Be as objective as possible. After providing your explanation, you must rate the response on "
    "a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")
PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question displayed below. You should choose the assistant that follows the user's instructions and answers "
    "the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, "
    "depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two responses "
    "and provide a short explanation. Avoid any position biases and ensure that the order in which the responses were "
    "presented does not influence your decision. Do not allow the length of the responses to influence your "
    "evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your "
    "explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A is better, "
    "\"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")
PAIR_PROMPT = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]"
    "\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]")

_RATING = (re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]"), re.compile(r"\[(\d+(?:\.\d+)?)\]"),  # MT-Bench's two patterns
           re.compile(r"rating\W{0,3}(\d+(?:\.\d+)?)", re.I), re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10"))
_VERDICT = re.compile(r"\[\[([ABC])\]\]")
_LOOSE_VERDICT = re.compile(r"(?i:assistant|answer|verdict)\W{0,3}([AB])\b")


def single_messages(question: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": SINGLE_SYSTEM},
            {"role": "user", "content": SINGLE_PROMPT.format(question=question, answer=answer)}]


def pair_messages(question: str, answer_a: str, answer_b: str) -> list[dict]:
    return [{"role": "system", "content": PAIR_SYSTEM},
            {"role": "user", "content": PAIR_PROMPT.format(question=question, answer_a=answer_a, answer_b=answer_b)}]


def parse_rating(text: str) -> float | None:
    """The 1-10 score of a single-answer judgment ("[[7]]", MT-Bench's "[7]", "Rating: 7", "7/10"); None if absent."""
    for pattern in _RATING:
        for match in pattern.finditer(text):
            score = float(match.group(1))
            if 1 <= score <= 10:
                return score
    return None


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def parse_verdict(text: str, answer_a: str = "", answer_b: str = "") -> str | None:
    """"A", "B" or "C" (tie) from a pairwise judgment: the last "[[X]]"; else "Assistant A/B" if only one is named;
    else the one answer whose text the judgment repeats (small judges restate the answer they pick); None if absent."""
    strict = _VERDICT.findall(text)
    if strict:
        return strict[-1]
    loose = {m.upper() for m in _LOOSE_VERDICT.findall(text)}
    if len(loose) == 1:
        return loose.pop()
    said, a, b = _norm(text), _norm(answer_a), _norm(answer_b)
    quoted = [letter for letter, ans in (("A", a), ("B", b)) if ans and ans in said]
    return quoted[0] if len(quoted) == 1 else None


def pairwise(judge: Judge, pairs: Sequence[dict]) -> dict:
    """Ask every (question, good, bad) pair in both orders. Per order a verdict is "good", "bad" or "tie" (C); the
    pair's verdict is that when both orders agree (consistent), else a tie (also when a judgment holds no verdict).
    Accuracy counts a tie as half."""
    convs = []
    for p in pairs:
        convs += [pair_messages(p["question"], p["good"], p["bad"]), pair_messages(p["question"], p["bad"], p["good"])]
    answers = judge(convs)
    if len(answers) != len(convs):
        raise LmforgeError(f"the judge answered {len(answers)} of {len(convs)} prompts")
    rows, letters = [], []
    for i, p in enumerate(pairs):
        first = parse_verdict(answers[2 * i], p["good"], p["bad"])
        second = parse_verdict(answers[2 * i + 1], p["bad"], p["good"])
        letters += [first, second]
        v1 = {"A": "good", "B": "bad", "C": "tie"}.get(first)  # good answer shown as A; None: no verdict found
        v2 = {"B": "good", "A": "bad", "C": "tie"}.get(second)  # good answer shown as B
        consistent = v1 is not None and v1 == v2
        rows.append({"question": p["question"], "good_first": first, "good_second": second,
                     "consistent": consistent, "verdict": v1 if consistent else "tie",
                     "judgments": [answers[2 * i], answers[2 * i + 1]]})
    n, asked = max(len(rows), 1), max(len(letters), 1)
    credit = {"good": 1.0, "tie": 0.5, "bad": 0.0}
    return {
        "pairs": len(rows),
        "accuracy": sum(credit[r["verdict"]] for r in rows) / n,
        "strict_accuracy": sum(r["verdict"] == "good" for r in rows) / n,
        "consistency": sum(r["consistent"] for r in rows) / n,
        "single_order_accuracy": sum(r["good_first"] == "A" for r in rows) / n,  # what asking once would report
        "position_bias": (letters.count("A") - letters.count("B")) / asked,  # +1: always the first answer
        "parsed": sum(v is not None for v in letters) / asked,
        "strict_format": sum(bool(_VERDICT.search(a)) for a in answers) / asked,  # wrote "[[A]]"/"[[B]]"/"[[C]]"
        "rows": rows,
    }


def single(judge: Judge, pairs: Sequence[dict]) -> dict:
    """Grade each good and bad answer alone (1-10); a pair is ranked right when good scores above bad (tie: half)."""
    convs = []
    for p in pairs:
        convs += [single_messages(p["question"], p["good"]), single_messages(p["question"], p["bad"])]
    answers = judge(convs)
    if len(answers) != len(convs):
        raise LmforgeError(f"the judge answered {len(answers)} of {len(convs)} prompts")
    scores = [parse_rating(a) for a in answers]
    rows = [{"question": p["question"], "good_score": scores[2 * i], "bad_score": scores[2 * i + 1],
             "judgments": answers[2 * i:2 * i + 2]} for i, p in enumerate(pairs)]

    def ranked(r: dict) -> float:
        g, b = r["good_score"], r["bad_score"]
        return 0.5 if g is None or b is None or g == b else float(g > b)

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    n = max(len(rows), 1)
    return {"pairs": len(rows), "accuracy": sum(ranked(r) for r in rows) / n,
            "mean_good": mean([r["good_score"] for r in rows]), "mean_bad": mean([r["bad_score"] for r in rows]),
            "parsed": sum(s is not None for s in scores) / max(len(scores), 1), "rows": rows}


def validate_pairs(rows: Sequence[object], source: str) -> list[dict]:
    """Each row must hold string question, good and bad fields."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("question", "good", "bad")):
            raise LmforgeError(f"{source}: item {number} needs string fields question, good and bad")
    if not rows:
        raise LmforgeError(f"{source} holds no (question, good, bad) items")
    return list(rows)
