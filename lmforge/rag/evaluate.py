"""Measuring RAG on a question set with gold passages: recall@k of each retrieval mode (BEIR's recall: the share
of questions with a gold chunk in the top k), and answer accuracy with and without retrieval, with the share of
correct answers that cite a gold chunk."""

from pathlib import Path

from lmforge.rag.answer import answer_questions
from lmforge.rag.facts import Question, is_correct
from lmforge.rag.retrieval import MODES, Retriever


def gold_chunks(index, question: Question, corpus: Path) -> set[int]:
    """Ids of the indexed chunks of the question's gold document whose offsets cover its gold sentence."""
    source = str((corpus / question.source).resolve())
    rows = index.catalog.db.execute("SELECT chunk, start, end FROM mentions WHERE source=?", (source,)).fetchall()
    start, end = question.span
    return {chunk for chunk, s, e in rows if s <= start and end <= e}


def recall_at_k(retriever: Retriever, questions: list[Question], gold: list[set[int]], k: int = 5) -> dict:
    out = {}
    for mode in MODES:
        found = [bool({c for c, _ in retriever.ranked(q.question, k, mode)} & g) for q, g in zip(questions, gold,
                                                                                            strict=True)]
        out[mode] = sum(found) / len(found)
    return out


def answer_accuracy(llm, tokenizer, stop_ids, retriever: Retriever, questions: list[Question], gold: list[set[int]],
                    k: int = 3, mode: str = "hybrid", reverse: bool = False) -> dict:
    """Accuracy with RAG (top-k chunks in the prompt), without, and the share of correct RAG answers that cite a
    gold chunk (after `verify_citation`, and as the model wrote them); plus every answer, for the report.
    `reverse`: give the sources worst first (the gold chunk last), to see whether citations follow content."""
    texts = [q.question for q in questions]
    hits = [retriever.retrieve(q, k, mode)[::-1 if reverse else 1] for q in texts]
    with_rag = answer_questions(llm, tokenizer, stop_ids, texts, hits)
    without = answer_questions(llm, tokenizer, stop_ids, texts, None)
    correct = [is_correct(a.text, q.answer) for a, q in zip(with_rag, questions, strict=True)]
    cites_gold = [any(a.hits[n - 1].chunk in g for n in a.cited) for a, g in zip(with_rag, gold, strict=True)]
    wrote_gold = [any(a.hits[n - 1].chunk in g for n in a.model_cited) for a, g in zip(with_rag, gold, strict=True)]
    n_correct = sum(correct)
    return {
        "accuracy_rag": n_correct / len(questions),
        "accuracy_no_rag": sum(is_correct(a.text, q.answer) for a, q in zip(without, questions, strict=True))
        / len(questions),
        "correct_citing_gold": (sum(c and g for c, g in zip(correct, cites_gold, strict=True)) / n_correct
                                if n_correct else 0.0),
        "correct_citing_gold_as_written": (sum(c and g for c, g in zip(correct, wrote_gold, strict=True)) /
                                           n_correct if n_correct else 0.0),
        "answers": [{"question": q.question, "gold": q.answer, "rag": a.text, "cited": a.cited,
                     "model_cited": a.model_cited, "correct": c,
                     "no_rag": b.text} for q, a, b, c in zip(questions, with_rag, without, correct, strict=True)],
    }
