"""RAG end to end on the real models, through the CLI: `lmforge rag facts` writes the invented-facts set, `rag index`
indexes it with all-MiniLM-L6-v2, `rag eval` answers 20 of its 40 questions (all 40: docs/rag.md) with
SmolLM2-135M-Instruct (greedy, the serving engine, the chat template) with and without retrieval. The figures are
printed: accuracy with RAG >= 60%, without <= 10%, >= 90% of correct answers cite a gold chunk; hybrid recall@5 >=
dense and BM25. `rag ask` prints an answer with its sources."""

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
    subset = questions.with_name("questions_half.jsonl")  # beside the corpus `rag eval` finds the gold spans in: 20
    subset.write_text("".join(questions.read_text().splitlines(keepends=True)[::2]))  # of the 40, to keep it short
    result = run_cli("rag", "eval", str(index), str(subset), timeout=900)
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


def test_lmforge_serve_embeddings_and_rag_through_the_openai_client(facts_index):
    """The real command: `lmforge serve --embedding-model all-minilm-l6-v2 --rag INDEX`."""
    import base64

    import httpx
    import numpy as np
    import openai

    from lmforge.rag.embedder import load_embedder
    from tests.server_util import serve_subprocess

    index, questions = facts_index
    with serve_subprocess("--embedding-model", "all-minilm-l6-v2", "--rag", str(index)) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        want = load_embedder("all-minilm-l6-v2").embed(["a town on a river"]).numpy()[0]
        as_float = client.embeddings.create(model="all-minilm-l6-v2", input=["a town on a river"],
                                            encoding_format="float")
        by_default = client.embeddings.create(model="all-minilm-l6-v2", input=["a town on a river"])  # base64
        as_base64 = client.embeddings.create(model="all-minilm-l6-v2", input=["a town on a river"],
                                             encoding_format="base64")  # handed back undecoded
        assert np.allclose(as_float.data[0].embedding, want, atol=1e-6)
        assert np.allclose(by_default.data[0].embedding, want, atol=1e-6)
        assert np.allclose(np.frombuffer(base64.b64decode(as_base64.data[0].embedding), "<f4"), want, atol=1e-6)
        question = json.loads(questions.read_text().splitlines()[0])
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300, json={
            "model": "smollm2-135m", "temperature": 0, "max_tokens": 40,
            "messages": [{"role": "user", "content": question["question"]}]}).json()
        assert r["choices"][0]["message"]["content"].startswith("According to source [")
        assert any(s["source"].endswith(question["source"]) for s in r["sources"])
