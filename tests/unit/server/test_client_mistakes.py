"""Issue 20 item 4: client mistakes are 400s, never 500s: bodies that make the JSON parser or the tokenizer raise,
a prompt larger than the KV cache (the error names the limit), and strings or booleans where OpenAI's API wants
a number or a boolean (strict types, no silent coercion)."""

import httpx
import pytest

from lmforge.engine.llm import EngineConfig
from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, chat, post

PROMPT = {"model": MODEL, "prompt": "the cat", "max_tokens": 2}
BROKEN_BODIES = [
    b'{"model": "tiny", "messages": ' + b"[" * 100000 + b"]" * 100000 + b"}",  # RecursionError in the parser
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"7" * 5000 + b"}",
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}',  # the tokenizer raised on this
    b'{"model": "tiny", "prompt": "a\\udfffb"}', b'{"model": "tiny", "prompt": ["ok", "\\ud83d"]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [5]}]}', b"\xff\xfe{}", b"null",
]
COERCED = [("max_tokens", "5"), ("max_tokens", 5.0), ("max_tokens", True), ("stream", "yes"), ("stream", 1),
           ("n", "2"), ("temperature", "0.5"), ("temperature", True), ("top_p", "1"), ("seed", "3"),
           ("logprobs", "true"), ("presence_penalty", "0"), ("stop", 7), ("user", 5), ("model", 5)]


@pytest.fixture(scope="module")
def server(lm):
    with live_server(lm, name=MODEL, config=EngineConfig(num_blocks=4, block_size=16)) as (url, llm):
        yield url, llm


@pytest.mark.parametrize("index", range(len(BROKEN_BODIES)))
def test_bodies_that_broke_the_parser_or_the_tokenizer_are_400(server, index):
    url, _ = server
    raw = BROKEN_BODIES[index]
    path = "/v1/completions" if b'"prompt"' in raw else "/v1/chat/completions"
    r = post(url, path, raw)
    assert r.status_code == 400, (raw[:80], r.status_code, r.text[:300])
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("field", "value"), COERCED)
def test_strings_and_booleans_are_not_coerced(server, field, value):
    url, _ = server
    r = post(url, "/v1/chat/completions", {**chat(max_tokens=2), field: value})
    assert r.status_code == 400, (field, value, r.text[:300])
    assert field in r.json()["error"]["message"]


def test_a_prompt_larger_than_the_kv_cache_is_a_400_naming_the_limit(server, lm):
    url, llm = server  # 4 blocks of 16 tokens: 64 tokens per request, far below the model's 256
    long_prompt = lm.tokenizer.decode(list(range(3, 83)))
    r = post(url, "/v1/completions", {**PROMPT, "prompt": long_prompt})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "64 tokens" in r.json()["error"]["message"] and "KV cache" in r.json()["error"]["message"]
    r = post(url, "/v1/completions", {**PROMPT, "prompt": [5] * 40, "max_tokens": 30})
    assert r.status_code == 400 and "64" in r.json()["error"]["message"]
    r = post(url, "/v1/completions", {**PROMPT, "prompt": [5] * 40})  # default max_tokens fits what is left
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    r = post(url, "/v1/chat/completions", chat("hi"))  # no max_tokens: bounded by the cache, not the context
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("length", "stop")
    assert httpx.get(url + "/health").status_code == 200
    assert llm.block_manager.num_free == llm.block_manager.num_blocks
