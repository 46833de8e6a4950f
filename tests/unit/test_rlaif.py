"""RLAIF (issue 30, item 5): `lmforge rlaif` samples K responses per prompt from a policy (or takes them from the
file), a judge compares every two in both orders, and the (chosen, rejected) pairs it writes follow the judge's
preference, with position-inconsistent verdicts and ties dropped; `lmforge dpo` reads the file. The judge here is a
scripted OpenAI-compatible endpoint (a thread in this process) that prefers the shorter answer, except on one
question where it always says "A" (pure position bias)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmforge.data.tasks.preferences import read_preference_jsonl
from lmforge.train.post.rlaif import judge_pairs
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.pretrained_tiny import pretrained_tiny_dir

BIASED = "Name a colour."
ANSWER = re.compile(r"\[The Start of Assistant ([AB])'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]", re.S)


def verdict(text: str) -> str:
    """The scripted judge: the shorter answer wins ([[C]] on equal lengths); on BIASED always [[A]]."""
    answers = dict(ANSWER.findall(text))
    if BIASED in text:
        return "Assistant A is better. [[A]]"
    a, b = len(answers["A"]), len(answers["B"])
    return "[[C]]" if a == b else f"The shorter one. [[{'A' if a < b else 'B'}]]"


class Judge(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # /v1/models
        self._send({"data": [{"id": "scripted-judge"}]})

    def do_POST(self):  # /v1/chat/completions
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        self._send({"choices": [{"message": {"role": "assistant", "content": verdict(text)},
                                 "finish_reason": "stop"}]})


@pytest.fixture(scope="module")
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_judge_pairs_keep_only_position_consistent_verdicts():
    def compare(items):
        return [None if "?" in q else ("A" if "bias" in q else ("A" if len(a) < len(b) else "B")) for q, a, b in items]

    pairs, stats = judge_pairs(compare, ["q", "bias", "?"], [["aa", "a", "aaa", "a"], ["x", "xx"], ["y", "yy"]])
    assert sorted((p["chosen"], p["rejected"]) for p in pairs) == [("a", "aa"), ("a", "aaa"), ("aa", "aaa")]
    assert stats == {"comparisons": 5, "consistent": 3, "inconsistent": 1, "ties": 0, "unparsed": 1,
                     "position_bias": pytest.approx((5 - 3) / 8), "pairs": 3}


def test_rlaif_cli_with_a_scripted_judge(tmp_path, capsys, judge_url):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Say hi.", "responses": ["hello there friend", "hi", "hey you"]},
            {"prompt": BIASED, "responses": ["red", "dark blue"]},
            {"prompt": "Count to three."}]  # sampled from the policy
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pairs.jsonl"
    result = run_main(capsys, "rlaif", "--prompts", prompts, "--out", out, "--endpoint", judge_url, "--model",
                      pretrained_tiny_dir(), "--k", "3", "--max-new-tokens", "6", "--seed", "1")
    assert result.returncode == 0, result.stderr
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(p["chosen"]) < len(p["rejected"]) for p in pairs)  # the judge's preference, every pair
    hi = {(p["chosen"], p["rejected"]) for p in pairs if p["prompt"] == "Say hi."}
    assert hi == {("hi", "hey you"), ("hi", "hello there friend"), ("hey you", "hello there friend")}
    assert not [p for p in pairs if p["prompt"] == BIASED]  # always "A": inconsistent under the swap, dropped
    assert "1 position-inconsistent (dropped)" in result.stdout
    assert len(read_preference_jsonl(out)) == len(pairs)  # what `lmforge dpo --data` reads


def test_rlaif_user_errors(tmp_path, capsys, judge_url):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "x"}) + "\n")
    out = tmp_path / "o.jsonl"
    assert_user_error(run_main(capsys, "rlaif", "--prompts", prompts, "--out", out), "--judge", "--endpoint")
    assert_user_error(run_main(capsys, "rlaif", "--prompts", prompts, "--out", out, "--endpoint", judge_url, "--k",
                               "1"), "--k", ">= 2")
    assert_user_error(run_main(capsys, "rlaif", "--prompts", prompts, "--out", out, "--endpoint", judge_url),
                      "--model")
    assert_user_error(run_main(capsys, "rlaif", "--prompts", tmp_path / "nope.jsonl", "--out", out, "--endpoint",
                               judge_url), "nope.jsonl")
    prompts.write_text("{\"text\": 1}\n")
    assert_user_error(run_main(capsys, "rlaif", "--prompts", prompts, "--out", out, "--endpoint", judge_url),
                      "p.jsonl:1", "prompt")
