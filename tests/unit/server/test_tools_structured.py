"""Issue 25 items 2 and 3 over HTTP, on a random tiny model (whose free text is never a tool call nor JSON): forced
tool calls (tool_choice required / named) come back as OpenAI `tool_calls` whose arguments validate against the
function's schema, the same streamed as not; response_format json_schema / json_object answers validate / parse;
tool results go back into the prompt; malformed tools / tool_choice / response_format are 400s and the server goes on.
"""

import json

import httpx
import jsonschema
import pytest
import torch

from lmforge.formats.loader import LM
from lmforge.model import Transformer, get_preset
from lmforge.server.protocol import ChatCompletionRequest
from lmforge.server.served import ServedModel
from tests.server_util import live_server
from tests.tiny_lm import tiny_tokenizer
from tests.unit.server.conftest import MODEL, post

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
       "required": ["a", "b"], "additionalProperties": False}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
TOOLS = [{"type": "function", "function": {"name": n, "description": f"the {n} tool", "parameters": s}}
         for n, s in SCHEMAS.items()]
ASK = [{"role": "user", "content": "weather in Paris?"}]
NESTED = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 5},
    "items": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                         "x": {"type": "boolean"}},
        "required": ["n", "x"], "additionalProperties": False}}},
    "required": ["title", "items"], "additionalProperties": False}


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)  # a long context: the Hermes tool listing is long in a 300-token vocabulary
    config = get_preset("tiny-llama", vocab_size=320, eos_token_id=2, max_seq_len=2048).replace(init_std=0.2)
    return LM(model=Transformer(config).eval(), tokenizer=tiny_tokenizer(), source="tiny",
              generation_config={"eos_token_id": 2})


@pytest.fixture(scope="module")
def server(lm):
    with live_server(lm, name=MODEL, default_max_tokens=300) as (url, llm):
        yield url, llm


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": ASK, "max_tokens": 300, "seed": 1, **fields}


def check_call(call: dict, names=SCHEMAS) -> tuple[str, dict]:
    assert call["type"] == "function" and call["id"].startswith("call_")
    name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
    assert name in names
    jsonschema.validate(arguments, SCHEMAS[name])
    return name, arguments


def streamed(url: str, body: dict) -> list[dict]:
    """The choices of a streamed chat completion, rebuilt from the deltas as the openai client does."""
    choices: dict[int, dict] = {}
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for c in chunk["choices"]:
                out = choices.setdefault(c["index"], {"content": "", "tool_calls": {}, "finish_reason": None})
                out["content"] += c["delta"].get("content") or ""
                out["finish_reason"] = c["finish_reason"] or out["finish_reason"]
                for d in c["delta"].get("tool_calls", []):
                    call = out["tool_calls"].setdefault(d["index"], {"type": None, "function": {"arguments": ""}})
                    call.update({k: d[k] for k in ("id", "type") if k in d})
                    call["function"]["name"] = d["function"].get("name", call["function"].get("name"))
                    call["function"]["arguments"] += d["function"].get("arguments", "")
    return [{**c, "tool_calls": [c["tool_calls"][i] for i in sorted(c["tool_calls"])]}
            for _, c in sorted(choices.items())]


def test_required_tool_call_stream_and_not(server):
    url, llm = server
    body = chat(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, n=3)
    r = post(url, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    plain = []
    for choice in r.json()["choices"]:
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        assert len(choice["message"]["tool_calls"]) == 1
        plain.append(check_call(choice["message"]["tool_calls"][0]))
    stream = []
    for choice in streamed(url, body):
        assert choice["finish_reason"] == "tool_calls" and choice["content"] == ""
        assert len(choice["tool_calls"]) == 1
        stream.append(check_call(choice["tool_calls"][0]))
    assert stream == plain  # same seeds, same tokens: the streamed deltas rebuild the same calls
    assert llm.block_manager.num_free == llm.block_manager.num_blocks


def test_named_tool_choice_and_parallel_calls(server):
    url, _ = server
    named = {"type": "function", "function": {"name": "add"}}
    r = post(url, "/v1/chat/completions", chat(tools=TOOLS, tool_choice=named, n=4))
    for choice in r.json()["choices"]:
        assert [check_call(c)[0] for c in choice["message"]["tool_calls"]] == ["add"]
    # parallel calls: a random model rarely picks the stop token among 320, so it is made likelier where it is allowed
    counts = []
    for choice in streamed(url, chat(tools=TOOLS, tool_choice="required", n=4, seed=5, max_tokens=1000,
                                     logit_bias={"2": 3})):
        assert choice["finish_reason"] == "tool_calls" and 1 <= len(choice["tool_calls"]) <= 16
        counts.append(len(choice["tool_calls"]))
        assert len({c["id"] for c in choice["tool_calls"]}) == len(choice["tool_calls"])
        for call in choice["tool_calls"]:
            check_call(call)
    print(counts)
    assert max(counts) > 1


def test_response_format_json_schema_and_json_object(server, lm):
    url, _ = server
    fmt = {"type": "json_schema", "json_schema": {"name": "listing", "schema": NESTED, "strict": True}}
    r = post(url, "/v1/chat/completions", chat(response_format=fmt, n=8))
    for choice in r.json()["choices"]:
        jsonschema.validate(json.loads(choice["message"]["content"]), NESTED)
        assert choice["finish_reason"] == "stop"
    for choice in streamed(url, chat(response_format=fmt, n=2)):
        jsonschema.validate(json.loads(choice["content"]), NESTED)
    close = lm.tokenizer.encode("}", add_special_tokens=False)[0]  # a random model closes a free object rarely
    r = post(url, "/v1/chat/completions", chat(response_format={"type": "json_object"}, n=8, max_tokens=400,
                                               logit_bias={str(close): 4}))
    for choice in r.json()["choices"]:
        assert choice["finish_reason"] == "stop"
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    free = post(url, "/v1/chat/completions", chat(n=4, max_tokens=30)).json()["choices"]
    assert not any(c["message"]["content"].startswith("{") for c in free)  # the model alone writes no JSON


def test_tool_results_go_back_into_the_prompt(server, lm):
    url, _ = server
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": '{"city": "Paris", "days": 1}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    r = post(url, "/v1/chat/completions", chat(messages=messages, tools=TOOLS, max_tokens=5))
    assert r.status_code == 200, r.text
    served = ServedModel(MODEL, lm.tokenizer, [2], 2048)
    [(ids, _)] = served.prepare(ChatCompletionRequest.model_validate(chat(messages=messages, tools=TOOLS)), "chat")
    text = lm.tokenizer.decode(ids)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}\n</tool_call>' in text
    assert "<|im_start|>tool\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>" in text
    assert '"name": "add"' in text.split("<|im_end|>")[0]  # the tools are listed in the system message
    assert r.json()["usage"]["prompt_tokens"] == len(ids)


TOOL = TOOLS[0]
MALFORMED = [
    {"tools": "get_weather"}, {"tools": [{"type": "retrieval"}]}, {"tools": [{"type": "function"}]},
    {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "http://127.0.0.1:1/s"}}}],
     "tool_choice": "required"},
    {"tools": [TOOL, TOOL]}, {"tools": [TOOL], "tool_choice": "maybe"}, {"tools": [TOOL], "tool_choice": 1},
    {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    {"tools": [TOOL], "tool_choice": {"type": "function"}}, {"tool_choice": "required"},
    {"tools": [TOOL], "parallel_tool_calls": "yes"}, {"response_format": "json"},
    {"response_format": {"type": "xml"}}, {"response_format": {"type": "json_schema"}},
    {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minLength": -1}}}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"format": "nonsense"}}}},
    {"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f"}}]}]},
    {"messages": [{"role": "assistant", "tool_calls": "call"}]},
]


@pytest.mark.parametrize("index", range(len(MALFORMED)))
def test_malformed_tools_and_formats_are_400_and_the_server_goes_on(server, index):
    url, llm = server
    r = post(url, "/v1/chat/completions", chat(max_tokens=2, **MALFORMED[index]))
    assert r.status_code == 400, (MALFORMED[index], r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    ok = post(url, "/v1/chat/completions", chat(max_tokens=2))
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None
