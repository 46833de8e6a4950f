"""The official `openai` client against a live lmforge server on the embedded SmolLM2: chat and completions,
streaming and not, n=2, stop, logprobs, usage, API keys, disconnects, and 30+ malformed requests answered 4xx."""

import json
import time

import httpx
import openai
import pytest

from lmforge.formats.loader import load
from lmforge.generation.generate import generate
from tests.server_util import live_server

pytestmark = pytest.mark.slow
KEY = "sk-test-key"
MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def lm():
    return load(MODEL)


@pytest.fixture(scope="module")
def server(lm):
    with live_server(lm, api_key=KEY) as (url, llm):
        yield url, llm


def client(url, key=KEY):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def greedy_text(lm, ids, n):
    out = generate(lm.model, [ids], max_new_tokens=n, stop_token_ids=lm.stop_token_ids())[0]
    out = [t for t in out if t not in lm.stop_token_ids()]
    return lm.tokenizer.decode(out), len(out)


def chat_ids(lm, messages):
    return lm.tokenizer.encode(lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True),
                               add_special_tokens=False)


def wait_all_blocks_free(llm, timeout=10.0):
    deadline = time.time() + timeout
    while llm.block_manager.num_free != llm.block_manager.num_blocks and time.time() < deadline:
        time.sleep(0.05)
    return llm.block_manager.num_free == llm.block_manager.num_blocks


def test_chat_completion_equals_greedy_reference_with_usage(server, lm):
    url, llm = server
    r = client(url).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    expected, _ = greedy_text(lm, chat_ids(lm, QUESTION), 24)
    assert r.choices[0].message.content == expected and "Paris" in expected
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == len(chat_ids(lm, QUESTION))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert wait_all_blocks_free(llm)


def test_chat_stream_matches_and_ends_with_usage(server, lm):
    url, _ = server
    stream = client(url).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [c for c in chunks if c.choices]
    assert all(c.choices[0].finish_reason is None for c in body[:-1]) and body[-1].choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == greedy_text(lm, chat_ids(lm, QUESTION), 24)[0]


def test_completions_stream_and_not(server, lm):
    url, _ = server
    prompt = "Once upon a time, in a small village,"
    expected, count = greedy_text(lm, lm.tokenizer.encode(prompt), 16)
    c = client(url)
    r = c.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16)
    assert r.choices[0].text == expected and r.usage.completion_tokens == count
    assert r.choices[0].finish_reason == ("length" if count == 16 else "stop")
    text = "".join(ch.choices[0].text for ch in c.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                                                        max_tokens=16, stream=True) if ch.choices)
    assert text == expected


def test_n2_gives_two_choices(server):
    url, _ = server
    r = client(url).chat.completions.create(model=MODEL, messages=QUESTION, n=2, temperature=1.0, seed=3,
                                            max_tokens=12)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    again = client(url).chat.completions.create(model=MODEL, messages=QUESTION, n=2, temperature=1.0, seed=3,
                                                max_tokens=12)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_stop_string_cuts_the_text(server, lm):
    url, _ = server
    full, _ = greedy_text(lm, chat_ids(lm, QUESTION), 24)
    stop = full[len(full) // 2:len(full) // 2 + 4]
    r = client(url).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stop=[stop])
    assert r.choices[0].message.content == full[:full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_logprobs(server):
    url, _ = server
    r = client(url).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=8,
                                            logprobs=True, top_logprobs=3)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        assert abs(e.logprob - max(t.logprob for t in e.top_logprobs)) < 1e-4  # greedy picks the top token
    c = client(url).completions.create(model=MODEL, prompt="The sky is", temperature=0, max_tokens=4, logprobs=2)
    assert len(c.choices[0].logprobs.tokens) == len(c.choices[0].logprobs.top_logprobs) == c.usage.completion_tokens


def test_api_key_refused_and_models_listed(server):
    url, _ = server
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    assert [m.id for m in client(url).models.list()] == [MODEL]
    assert httpx.get(f"{url}/health").status_code == 200


def test_disconnect_mid_stream_frees_blocks(server):
    url, llm = server
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i >= 6:
                break
    assert wait_all_blocks_free(llm)
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text  # /metrics needs the key
    assert "lmforge_aborted_requests_total" in metrics and "lmforge_kv_blocks_in_use 0" in metrics


MALFORMED = [
    ("chat", b"{not json"), ("chat", b""), ("chat", b"[1, 2]"), ("chat", b'"text"'),
    ("chat", {}), ("chat", {"model": MODEL}), ("chat", {"messages": QUESTION}),
    ("chat", {"model": "nope", "messages": QUESTION}), ("chat", {"model": MODEL, "messages": []}),
    ("chat", {"model": MODEL, "messages": "hi"}), ("chat", {"model": MODEL, "messages": [{"content": "hi"}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}),
    ("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": -1}),
    ("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": 0}),
    ("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": "ten"}),
    ("chat", {"model": MODEL, "messages": QUESTION, "max_tokens": 10**9}),
    ("chat", {"model": MODEL, "messages": QUESTION, "temperature": -0.5}),
    ("chat", {"model": MODEL, "messages": QUESTION, "temperature": 3}),
    ("chat", {"model": MODEL, "messages": QUESTION, "temperature": "hot"}),
    ("chat", {"model": MODEL, "messages": QUESTION, "top_p": 2}),
    ("chat", {"model": MODEL, "messages": QUESTION, "top_p": 0}),
    ("chat", {"model": MODEL, "messages": QUESTION, "n": 0}),
    ("chat", {"model": MODEL, "messages": QUESTION, "n": 100}),
    ("chat", {"model": MODEL, "messages": QUESTION, "presence_penalty": 5}),
    ("chat", {"model": MODEL, "messages": QUESTION, "frequency_penalty": -3}),
    ("chat", {"model": MODEL, "messages": QUESTION, "top_logprobs": 50, "logprobs": True}),
    ("chat", {"model": MODEL, "messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}),
    ("chat", {"model": MODEL, "messages": QUESTION, "stop": [""]}),
    ("chat", {"model": MODEL, "messages": QUESTION, "seed": -1}),
    ("chat", {"model": MODEL, "messages": QUESTION, "logit_bias": {"abc": 1}}),
    ("chat", {"model": MODEL, "messages": QUESTION, "logit_bias": {"5": 500}}),
    ("chat", {"model": MODEL, "messages": [{"role": "user", "content": "word " * 10000}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("completion", {"model": MODEL}), ("completion", {"model": MODEL, "prompt": ""}),
    ("completion", {"model": MODEL, "prompt": [10**9]}), ("completion", {"model": MODEL, "prompt": 42}),
    ("completion", {"model": MODEL, "prompt": "hi", "logprobs": 10}),
    ("completion", {"model": MODEL, "prompt": "hi", "stream": "yes please"}),
    ("huge", b'{"model": "' + b"x" * (5 * 2**20) + b'"}'),
]


def test_malformed_requests_get_4xx_openai_errors_and_the_server_keeps_serving(server):
    url, llm = server
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    paths = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "huge": "/v1/chat/completions"}
    statuses = []
    for kind, body in MALFORMED:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(url + paths[kind], content=raw, headers=headers, timeout=60)
        statuses.append(r.status_code)
        assert 400 <= r.status_code < 500, (kind, body if len(raw) < 200 else raw[:60], r.status_code, r.text[:200])
        error = r.json()["error"]
        assert error["message"] and error["type"] and set(error) == {"message", "type", "param", "code"}
    assert len(MALFORMED) >= 30 and 404 in statuses and 413 in statuses
    assert httpx.get(f"{url}/v1/nope", headers=headers).status_code == 404
    assert httpx.get(f"{url}/v1/chat/completions", headers=headers).status_code == 405
    r = client(url).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=4)
    assert r.choices[0].message.content
    assert wait_all_blocks_free(llm)
