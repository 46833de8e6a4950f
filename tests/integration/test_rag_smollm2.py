"""RAG end to end on the real models, through the CLI: `lmforge rag facts` writes the invented-facts set, `rag index`
indexes it with all-MiniLM-L6-v2, `rag eval` answers its 40 questions with SmolLM2-135M-Instruct (greedy, the
serving engine, the chat template) with and without retrieval. The figures are printed (and quoted in docs/rag.md):
accuracy with RAG >= 60%, without <= 10%, >= 90% of correct answers cite a gold chunk; hybrid recall@5 >= dense and
BM25. `rag ask` prints an answer with its sources."""

import json

import pytest

from tests.cli_util import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def facts_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag")
    made = run_cli("rag", "facts", "--out", str(root / "facts"))
    assert made.returncode == 0, made.stderr
    built = run_cli("rag", "index", str(root / "facts" / "corpus"), "--out", str(root / "index"))
    assert built.returncode == 0, built.stderr
    return root / "index", root / "facts" / "questions.jsonl"


def test_rag_eval_accuracy_and_citations_on_invented_facts(facts_index):
    index, questions = facts_index
    result = run_cli("rag", "eval", str(index), str(questions), timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("\n" + json.dumps(report))
    recall = report["recall@5"]
    assert recall["hybrid"] >= max(recall["dense"], recall["bm25"])
    assert report["accuracy_rag"] >= 0.6, result.stderr
    assert report["accuracy_no_rag"] <= 0.1, result.stderr
    assert report["correct_citing_gold"] >= 0.9, result.stderr


def test_rag_ask_prints_answer_and_sources(facts_index):
    index, questions = facts_index
    question = json.loads(questions.read_text().splitlines()[0])
    result = run_cli("rag", "ask", str(index), question["question"], "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert question["answer"].lower() in out["answer"].lower()
    assert any(s["cited"] and s["source"].endswith(question["source"]) for s in out["sources"])
    plain = run_cli("rag", "ask", str(index), question["question"], timeout=300)
    assert "Sources:" in plain.stdout and question["source"] in plain.stdout
