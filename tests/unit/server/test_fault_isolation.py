"""Issue 20 item 1: one request never ends another. Out-of-range per-request values are refused before admission
(400), and a fault inside an engine step, wherever it strikes, ends only the request at fault: three concurrent
greedy streams finish with exactly the text they get alone."""

import threading
import time

import httpx
import pytest

from lmforge.engine.scheduler import Scheduler
from lmforge.generation.request_state import RequestState
from lmforge.generation.sampling import Sampler
from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, chat, post, slow_steps, stream_text

GUILTY_SEED = 666
PROMPTS = ["the cat sat on the mat", "hello world, hello there", "a stop string may span tokens"]


def _guilty(params) -> bool:
    return params is not None and params.seed == GUILTY_SEED


def _inject(monkeypatch, where: str, seen: list) -> None:
    """Make one request (seed 666) raise inside the engine: in the batched sampler, in its own bookkeeping after
    sampling, or in the scheduler (outside any one request). `seen` records the batch size when the fault fired."""
    if where == "sampler":
        real = Sampler.process

        def process(self, logits, history=None, allowed=None):
            if any(_guilty(p) for p in self.params):
                seen.append(len(self.params))
                raise RuntimeError("injected fault in the sampler")
            return real(self, logits, history, allowed)
        monkeypatch.setattr(Sampler, "process", process)
    elif where == "push":
        real = RequestState.push

        def push(self, token, logprob=None, top=None):
            if _guilty(self.params):
                seen.append(1)
                raise RuntimeError("injected fault after sampling")
            return real(self, token, logprob, top)
        monkeypatch.setattr(RequestState, "push", push)
    else:
        real = Scheduler.schedule

        def schedule(self):
            queued = [*self.running, *self.waiting]
            if any(_guilty(s.params) for s in queued):
                seen.append(len(queued))
                raise RuntimeError("injected fault in the scheduler")
            return real(self)
        monkeypatch.setattr(Scheduler, "schedule", schedule)


@pytest.mark.parametrize("where", ["sampler", "push", "scheduler"])
def test_a_fault_in_one_request_ends_only_that_request(lm, monkeypatch, where):
    with live_server(lm, name=MODEL) as (url, llm):
        bodies = [{"model": MODEL, "prompt": p, "max_tokens": 40, "temperature": 0} for p in PROMPTS]
        alone = [stream_text(url, b) for b in bodies]
        assert all(tokens == 40 and not errors for _, tokens, errors in alone)
        seen: list = []
        _inject(monkeypatch, where, seen)
        slow_steps(llm, 0.01)  # 40 steps of >= 10 ms: the guilty request arrives while the streams run
        results: list = [None] * 3
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, stream_text(url, bodies[i])))
                   for i in range(3)]
        for t in threads:
            t.start()
        # All three streams run before the guilty request arrives: a fault outside any one request (the scheduler)
        # ends the newest request, which must be the guilty one, not a stream whose HTTP request came in late.
        deadline = time.time() + 10
        while len(llm.scheduler.running) < 3 and time.time() < deadline:
            time.sleep(0.005)
        assert len(llm.scheduler.running) == 3
        guilty = post(url, "/v1/completions", {"model": MODEL, "prompt": "the dog", "max_tokens": 8,
                                               "seed": GUILTY_SEED})
        for t in threads:
            t.join()
        assert results == alone  # same text, same token count, no error event
        assert guilty.status_code == 500 and guilty.json()["error"]["type"] == "server_error"
        assert "injected fault" in guilty.json()["error"]["message"]
        assert seen and (where == "push" or max(seen) >= 2)  # the fault struck a step shared with valid requests
        assert post(url, "/v1/chat/completions", chat(max_tokens=2)).status_code == 200
        deadline = time.time() + 5
        while llm.block_manager.num_free != llm.block_manager.num_blocks and time.time() < deadline:
            time.sleep(0.02)
        assert llm.block_manager.num_free == llm.block_manager.num_blocks


BAD_VALUES = [
    {"logit_bias": {"320": 1}}, {"logit_bias": {"49152": 1}}, {"logit_bias": {"-1": 1}}, {"logit_bias": {"1.5": 1}},
    {"logit_bias": {"99999999999999999999999": 1}}, {"logit_bias": {"5": 101}}, {"logit_bias": {"5": -1e300}},
    {"logit_bias": {"5": "1"}}, {"logit_bias": {"5": True}}, {"logit_bias": {str(i): 1 for i in range(1100)}},
    {"logit_bias": [1, 2]}, {"top_k": -2}, {"top_k": 1.5}, {"min_p": 1.5}, {"min_p": -0.1},
    {"repetition_penalty": 0}, {"repetition_penalty": 1e9}, {"presence_penalty": 2.5}, {"frequency_penalty": -9},
    {"stop": 5}, {"stop": [1, 2]}, {"stop": ["a", None]}, {"n": 9}, {"n": -1}, {"seed": 1.5}, {"seed": "7"},
    {"seed": 2**64}, {"top_p": 0}, {"temperature": 2.5}, {"max_tokens": 0}, {"top_logprobs": 21, "logprobs": True},
]


def test_out_of_range_values_are_refused_before_admission(lm):
    with live_server(lm, name=MODEL) as (url, llm):
        added = []
        real_add = llm.add_request
        llm.add_request = lambda *a, **k: added.append(a) or real_add(*a, **k)
        for fields in BAD_VALUES:
            r = post(url, "/v1/chat/completions", chat(**{"max_tokens": 2, **fields}))
            assert r.status_code == 400, (fields, r.status_code, r.text[:300])
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert added == []  # none reached the engine
        r = post(url, "/v1/completions", {"model": MODEL, "prompt": [5, 6], "max_tokens": 2, "logit_bias": {"319": 5}})
        assert r.status_code == 200 and added  # the last id of the model's vocabulary is fine
        assert httpx.get(url + "/health").status_code == 200
