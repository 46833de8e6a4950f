"""LLM-as-judge: the position-swap protocol (a judge that always says "A" scores 50% and 0% consistency, not 100%),
an oracle judge scores 100%, MT-Bench verdict / rating parsing, the engine and OpenAI-endpoint judges, and the CLI."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmforge.eval.judge import pairwise, parse_rating, parse_verdict, single
from lmforge.eval.judge_data import JUDGE_PAIRS
from tests.cli_util import assert_user_error, run_cli


def always_a(conversations):
    return ["Both are fine, but assistant A is better. [[A]]" for _ in conversations]


def oracle(conversations):
    """Knows the labels: picks the slot holding the good answer, grades good 9 and bad 2."""
    good = {p["good"] for p in JUDGE_PAIRS}
    out = []
    for conv in conversations:
        text = conv[-1]["content"]
        if "Assistant A's Answer" in text:
            a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
            out.append("[[A]]" if a in good else "[[B]]")
        else:
            answer = text.split("[The Start of Assistant's Answer]\n")[1].split("\n[The End")[0]
            out.append("Rating: [[9]]" if answer in good else "Rating: [[2]]")
    return out


def test_always_a_judge_scores_half_and_zero_consistency():
    r = pairwise(always_a, JUDGE_PAIRS)
    assert r["pairs"] == len(JUDGE_PAIRS) == 24
    assert r["accuracy"] == 0.5 and r["strict_accuracy"] == 0.0
    assert r["consistency"] == 0.0 and r["position_bias"] == 1.0
    assert r["single_order_accuracy"] == 1.0  # what one order alone would have claimed
    assert all(row["verdict"] == "tie" for row in r["rows"])
    mute = pairwise(lambda convs: ["I cannot tell." for _ in convs], JUDGE_PAIRS)
    assert (mute["accuracy"], mute["consistency"], mute["parsed"]) == (0.5, 0.0, 0.0)  # no verdict agrees with none


def test_oracle_judge_is_perfect_and_unbiased():
    r = pairwise(oracle, JUDGE_PAIRS)
    assert (r["accuracy"], r["consistency"], r["position_bias"], r["strict_format"]) == (1.0, 1.0, 0.0, 1.0)
    s = single(oracle, JUDGE_PAIRS)
    assert (s["accuracy"], s["mean_good"], s["mean_bad"], s["parsed"]) == (1.0, 9.0, 2.0, 1.0)


def test_parsing():
    assert parse_rating("Good answer. Rating: [[7]]") == 7.0
    assert parse_rating("I give it [8.5].") == 8.5  # MT-Bench's second pattern
    assert parse_rating("Rating: 3") == 3.0 and parse_rating("a solid 6/10") == 6.0
    assert parse_rating("no score [[42]] here") is None and parse_rating("fine") is None
    assert parse_verdict("A is long... final: [[B]]") == "B" and parse_verdict("[[C]]") == "C"
    assert parse_verdict("Assistant B answers better.") == "B"
    assert parse_verdict("Assistant A and Assistant B both try.") is None
    assert parse_verdict("The answer is Paris.", "Berlin.", "Paris.") == "B"  # restates the answer it picks
    assert parse_verdict("Paris or Berlin?", "Berlin.", "Paris.") is None


class _AlwaysA(BaseHTTPRequestHandler):
    def do_GET(self):  # /v1/models
        self._send({"object": "list", "data": [{"id": "stub-judge", "object": "model"}]})

    def do_POST(self):  # /v1/chat/completions
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["temperature"] == 0 and body["model"] == "stub-judge"
        text = "Rating: [[5]]" if "rate the response" in body["messages"][-1]["content"] else "[[A]]"
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}]})

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysA)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_cli_judge_over_an_openai_endpoint(stub_endpoint, tmp_path):
    res = run_cli("judge", "--endpoint", stub_endpoint, "--limit", "6", "--out", str(tmp_path / "j.json"))
    assert res.returncode == 0, res.stderr
    assert "accuracy 50.0%" in res.stdout and "swap consistency 0.0%" in res.stdout
    assert "position bias +1.00" in res.stdout
    report = json.loads((tmp_path / "j.json").read_text())
    assert report["pairs"] == 6 and report["pairwise"]["single_order_accuracy"] == 1
    assert report["single"]["mean_good"] == report["single"]["mean_bad"] == 5.0
    assert report["single"]["accuracy"] == 0.5


def test_engine_judge_answers_each_conversation_greedily():
    from lmforge.eval.judge import pair_messages
    from lmforge.eval.judge_backends import engine_judge
    from tests.tiny_lm import tiny_lm

    lm = tiny_lm()
    assert lm.tokenizer.chat_template  # the tiny tokenizer's ChatML template
    ask = engine_judge(lm, max_tokens=6)
    convs = [pair_messages("q?", "yes", "no"), pair_messages("q?", "no", "yes"), pair_messages("q?", "yes", "no")]
    answers = ask(convs)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert answers[0] == answers[2]  # greedy: the same prompt, the same judgment


def test_user_errors(tmp_path, stub_endpoint):
    assert_user_error(run_cli("judge", "--endpoint", stub_endpoint, "--mode", "vote"), "'vote'", "pairwise")
    assert_user_error(run_cli("judge", "--endpoint", stub_endpoint, "--pairs", str(tmp_path / "no.jsonl")),
                      "no.jsonl", "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "good": "g"}) + "\n")
    assert_user_error(run_cli("judge", "--endpoint", stub_endpoint, "--pairs", str(bad)), "item 1", "bad")
    assert_user_error(run_cli("judge", "--endpoint", "ftp://x"), "--endpoint", "ftp://x")
