"""Issue 20 acceptance: 600 generated request bodies (hypothesis, derandomized: the same bodies every run) against
/v1/chat/completions and /v1/completions on a live server: no 5xx, no server_error in a stream, and the server
still answers and holds no KV block afterwards. Valid bodies ask for 1-2 tokens, so the run stays short."""

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, chat, post

EXAMPLES = 600
LEAF = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12))
JUNK = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=6)
BAD = st.sampled_from([-1, 0, -0.5, 1e9, 2**64, 10**30, "1", "0.5", "yes", True, False, None, [], {}]) | JUNK
TOKEN_ID = st.integers(0, 319)  # the model's vocabulary is [0, 320)
BAD_ID = st.integers(-5, -1) | st.integers(320, 60000)
TEXT = st.text(max_size=30)
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # json.dumps writes "\\ud800"
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer"]),
                                 "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                                   "text": TEXT}), max_size=2)})
BAD_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "wizard", 5, None])},
                                    optional={"content": BAD | SURROGATES | st.lists(JUNK, max_size=2)})
COMMON = {  # field: (valid values, wrong ones)
    "max_tokens": (st.sampled_from([1, 2]), BAD),
    "temperature": (st.floats(0, 2), st.floats(-5, -0.01) | st.floats(2.01, 1e6) | BAD),
    "top_p": (st.floats(0.01, 1), st.floats(-1, 0) | st.floats(1.01, 10) | BAD),
    "top_k": (st.integers(-1, 400), st.integers(-10**6, -2) | BAD),
    "min_p": (st.floats(0, 1), st.floats(1.01, 5) | BAD),
    "presence_penalty": (st.floats(-2, 2), st.floats(2.01, 1e9) | BAD),
    "frequency_penalty": (st.floats(-2, 2), st.floats(-1e9, -2.01) | BAD),
    "repetition_penalty": (st.floats(0.5, 2), st.floats(-5, 0) | st.floats(101, 1e9) | BAD),
    "n": (st.sampled_from([1, 2]), st.integers(-3, 0) | st.integers(9, 10**6) | BAD),
    "stream": (st.booleans(), BAD),
    "stream_options": (st.fixed_dictionaries({"include_usage": st.booleans()}), BAD),
    "stop": (st.text(min_size=1, max_size=4) | st.lists(st.text(min_size=1, max_size=4), max_size=4),
             st.lists(st.text(max_size=2), min_size=5, max_size=6) | st.just([""]) | BAD),
    "seed": (st.integers(0, 2**63 - 1), st.integers(-10**20, -1) | st.integers(2**63, 2**80) | BAD),
    "logit_bias": (st.dictionaries(TOKEN_ID.map(str), st.floats(-100, 100), max_size=4),
                   st.dictionaries(BAD_ID.map(str) | st.text(max_size=4), st.floats(-150, 150), min_size=1,
                                   max_size=3) | st.dictionaries(TOKEN_ID.map(str), BAD, min_size=1, max_size=2)
                   | BAD),
    "user": (st.text(max_size=8), BAD),
    "model": (st.just(MODEL), BAD),
}
CHAT_FIELDS = {**COMMON, "messages": (st.lists(MESSAGE, min_size=1, max_size=3),
                                      st.lists(BAD_MESSAGE, max_size=2) | BAD),
               "logprobs": (st.booleans(), BAD), "top_logprobs": (st.integers(0, 20), st.integers(21, 99) | BAD),
               "max_completion_tokens": (st.sampled_from([1, 2]), BAD)}
COMPLETION_FIELDS = {**COMMON, "prompt": (TEXT.filter(bool) | st.lists(TOKEN_ID, min_size=1, max_size=8)
                                          | st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3),
                                          st.lists(BAD_ID, min_size=1, max_size=3) | st.just("") | SURROGATES | BAD),
                     "logprobs": (st.integers(0, 5), st.integers(6, 99) | BAD), "echo": (st.booleans(), BAD)}
REQUIRED = {"model", "messages", "prompt", "max_tokens"}


@st.composite
def body(draw, fields: dict) -> dict:
    """A valid body (every field chosen from its valid values), then 0-2 fields (mostly one) made wrong or dropped."""
    out = {name: draw(valid) for name, (valid, _) in fields.items()
           if name in REQUIRED or draw(st.integers(0, 3)) == 0}
    wrong = draw(st.sampled_from([0, 1, 1, 1, 2]))
    for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=wrong, max_size=wrong, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            out.pop(name, None)
        else:
            out[name] = draw(fields[name][1])
    return out


@pytest.fixture(scope="module")
def server(lm):
    with live_server(lm, name=MODEL, default_max_tokens=2) as (url, llm):
        yield url, llm


def test_generated_bodies_never_get_a_5xx(server):
    url, llm = server
    statuses: list[int] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["chat", "completion"]), data=st.data(), cut=st.integers(0, 15))
    def one_request(kind, data, cut):
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        raw = json.dumps(data.draw(body(CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS))).encode()
        raw = raw[:len(raw) * cut // 16] if cut < 2 else raw  # one in eight bodies is cut short
        r = client.post(url + path, content=raw, headers={"Content-Type": "application/json"})
        statuses.append(r.status_code)
        assert r.status_code < 500, (path, raw[:300], r.status_code, r.text[:300])
        assert "server_error" not in r.text, (path, raw[:300], r.text[:300])

    with httpx.Client(timeout=60) as client:
        one_request()
    assert len(statuses) >= 500
    assert statuses.count(200) >= 50 and sum(400 <= s < 500 for s in statuses) >= 200  # both sides exercised
    assert httpx.get(url + "/health").status_code == 200 and llm_alive(url)
    deadline = time.time() + 5
    while llm.block_manager.num_free != llm.block_manager.num_blocks and time.time() < deadline:
        time.sleep(0.02)
    assert llm.block_manager.num_free == llm.block_manager.num_blocks


def llm_alive(url: str) -> bool:
    r = post(url, "/v1/chat/completions", chat(max_tokens=2, temperature=0))
    return r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
