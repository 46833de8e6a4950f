"""`/v1/embeddings` through the official `openai` client (float and base64: the client's default asks for base64 and
decodes it itself) gives the embedder's own vectors; token-id inputs, `dimensions`, usage, and client mistakes as
OpenAI error JSON."""

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.server_util import live_server
from tests.tiny_lm import tiny_lm

NAME = "all-minilm-l6-v2"
TEXTS = ["The cat sits on the mat.", "我喜欢吃苹果。", "Pizza 🍕 or sushi 🍣?"]


@pytest.fixture(scope="module")
def server(minilm):
    with live_server(tiny_lm(), name="tiny", embedder=minilm) as (url, _):
        yield url


def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


def test_openai_client_float_and_base64_equal_the_embedder(server, minilm):
    want = minilm.embed(TEXTS).numpy()
    as_float = client(server).embeddings.create(model=NAME, input=TEXTS, encoding_format="float")
    as_default = client(server).embeddings.create(model=NAME, input=TEXTS)  # the client sends base64
    raw = httpx.post(f"{server}/v1/embeddings", json={"model": NAME, "input": TEXTS, "encoding_format": "base64"},
                     timeout=60).json()
    for i, vector in enumerate(want):
        assert np.allclose(as_float.data[i].embedding, vector, atol=1e-7)
        assert np.array_equal(np.asarray(as_default.data[i].embedding, dtype=np.float32), vector)
        assert np.array_equal(np.frombuffer(base64.b64decode(raw["data"][i]["embedding"]), "<f4"), vector)
    tokens = sum(len(ids) for ids in minilm.tokenize(TEXTS))
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == tokens
    assert [d.index for d in as_float.data] == [0, 1, 2] and as_float.model == NAME


def test_token_ids_string_and_dimensions(server, minilm):
    ids = minilm.tokenize(["hello world"])[0]
    by_ids = client(server).embeddings.create(model=NAME, input=ids, encoding_format="float").data[0].embedding
    by_text = client(server).embeddings.create(model=NAME, input="hello world", encoding_format="float")
    assert np.allclose(by_ids, by_text.data[0].embedding, atol=1e-7)
    short = client(server).embeddings.create(model=NAME, input="hello world", dimensions=64, encoding_format="float")
    cut = np.asarray(by_text.data[0].embedding[:64])
    assert len(short.data[0].embedding) == 64
    assert np.allclose(short.data[0].embedding, cut / np.linalg.norm(cut), atol=1e-6)


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "other", "input": "x"}, 404, "does not exist"),
    ({"model": NAME, "input": ""}, 400, "must not be empty"),
    ({"model": NAME, "input": []}, 400, "must not be empty"),
    ({"model": NAME, "input": "x", "dimensions": 999}, 400, "dimensions=999"),
    ({"model": NAME, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": NAME, "input": [[1, 2], [99999999]]}, 400, "outside the vocabulary"),
    ({"model": NAME, "input": [list(range(1000, 1300))]}, 400, "more than this model's 256"),
    ({"model": NAME, "input": ["x"] * 2049}, 400, "at most 2048"),
])
def test_client_mistakes_are_openai_errors(server, body, status, needle):
    r = httpx.post(f"{server}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
