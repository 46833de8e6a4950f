"""/v1/completions as lm-eval's local-completions model uses it: echo + logprobs give every prompt token's
log-probability (checked against one direct forward pass), token-id prompts in a batch, max_tokens 0 and 1, seed,
streaming with echo; and the vLLM-style tokenizer routes lm-eval's remote tokenizer calls."""

import json

import httpx
import pytest
import torch

from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, post

PROMPTS = [[17, 40, 99, 23, 5, 61], [17, 40, 8], [250, 3, 77, 91, 12, 45, 66, 7]]


@pytest.fixture(scope="module")
def server(lm):
    with live_server(lm, name=MODEL) as (url, llm):
        yield url, llm


def direct(lm, ids):
    """log P(ids[i] | ids[:i]) for i >= 1 and the argmax at each position, from one plain forward pass."""
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([ids]))[0].float(), -1)[:-1]
    target = torch.tensor(ids[1:])
    return logprobs.gather(-1, target[:, None])[:, 0].tolist(), logprobs.max(-1).values.tolist()


def test_echo_logprobs_of_token_id_prompts_as_lm_eval_sends_them(server, lm):
    url, _ = server
    body = {"model": MODEL, "prompt": PROMPTS, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234,
            "echo": True}
    r = post(url, "/v1/completions", body)
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    for ids, choice in zip(PROMPTS, choices, strict=True):
        lp = choice["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the one generated token
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        expected, best = direct(lm, ids)
        assert lp["token_logprobs"][1:len(ids)] == pytest.approx(expected, abs=1e-4)
        assert [max(top.values()) for top in lp["top_logprobs"][1:len(ids)]] == pytest.approx(best, abs=1e-4)
        assert choice["text"].startswith(lm.tokenizer.decode(ids))
        assert lp["tokens"][:len(ids)] == [lm.tokenizer.decode([t]) for t in ids]
        # what lm-eval's parse_logprobs reads: the continuation after a 2-token context, and its greediness
        assert sum(lp["token_logprobs"][2:-1]) == pytest.approx(sum(expected[1:]), abs=1e-4)


def test_max_tokens_0_scores_the_prompt_only(server, lm):
    url, _ = server
    r = post(url, "/v1/completions", {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 0, "logprobs": 0,
                                      "echo": True})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 0
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(direct(lm, PROMPTS[0])[0], abs=1e-4)
    assert choice["text"] == lm.tokenizer.decode(PROMPTS[0])
    for fields, param in (({"echo": False}, "max_tokens"), ({"echo": True, "stream": True}, "stream")):
        r = post(url, "/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 0, **fields})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_echo_text_prompt_and_stream(server, lm):
    url, _ = server
    body = {"model": MODEL, "prompt": "the cat sat", "max_tokens": 4, "temperature": 0, "echo": True}
    plain = post(url, "/v1/completions", body).json()["choices"][0]["text"]
    assert plain.startswith("the cat sat") and len(plain) > len("the cat sat")
    chunks = []
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True, "logprobs": 2},
                      timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    assert chunks[0]["choices"][0]["text"] == "the cat sat"
    assert chunks[0]["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == plain


def test_tokenizer_routes_as_lm_eval_remote_tokenizer_uses_them(server, lm):
    url, _ = server
    info = httpx.get(url + "/tokenizer_info").json()
    assert info["eos_token"] == lm.tokenizer.eos_token and info["chat_template"] == lm.tokenizer.chat_template
    r = post(url, "/tokenize", {"prompt": "hello world, 東京", "add_special_tokens": False}).json()
    assert r["tokens"] == lm.tokenizer.encode("hello world, 東京", add_special_tokens=False)
    assert post(url, "/detokenize", {"tokens": r["tokens"]}).json()["prompt"] == "hello world, 東京"
    assert post(url, "/detokenize", {"tokens": [10**6]}).status_code == 400
    assert post(url, "/tokenize", {"prompt": 5}).status_code == 400

    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    assert check_remote_tokenizer_support(f"{url}/v1/completions")
    remote = RemoteTokenizer(f"{url}/v1/completions")
    assert remote.eos_token_id == lm.tokenizer.eos_token_id
