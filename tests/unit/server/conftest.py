"""A tiny random model (varied greedy tokens) behind a live server, and small HTTP helpers for the server tests."""

import json

import httpx
import pytest
import torch

from lmforge.formats.loader import LM
from lmforge.model import Transformer, get_preset
from tests.tiny_lm import tiny_tokenizer

MODEL = "tiny"
KEY = "sk-tiny"


@pytest.fixture(scope="session")
def lm():
    torch.manual_seed(0)
    # init_std 0.2: at the default 0.02 a tiny model repeats one token, so "the same tokens as alone" would say little
    config = get_preset("tiny-llama", vocab_size=320, eos_token_id=2).replace(init_std=0.2)
    return LM(model=Transformer(config).eval(), tokenizer=tiny_tokenizer(), source="tiny",
              generation_config={"eos_token_id": 2})


def chat(content="hello there", **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def post(url: str, path: str, body, headers=None, timeout=60) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=raw, headers={"Content-Type": "application/json", **(headers or {})},
                      timeout=timeout)


def stream_text(url: str, body: dict, headers=None) -> tuple[str, int | None, list]:
    """(text, completion tokens from usage, error bodies) of one streamed completion or chat request."""
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    text, tokens, errors = [], None, []
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                errors.append(chunk["error"])
            elif chunk["choices"]:
                c = chunk["choices"][0]
                text.append(c["delta"].get("content") or "" if "delta" in c else c["text"])
            elif chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return "".join(text), tokens, errors


def slow_steps(llm, seconds: float) -> None:
    """Make every engine step take at least `seconds`, so that requests overlap in time."""
    import time

    run = llm.runner.run

    def slow_run(*args, **kwargs):
        time.sleep(seconds)
        return run(*args, **kwargs)

    llm.runner.run = slow_run
