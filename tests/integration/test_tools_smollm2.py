"""Issue 25 acceptance on the embedded SmolLM2 through the official `openai` client: a tool-calling loop
(tool_choice required, the tool's result sent back, a final answer), streamed and not; 100 constrained generations
on a nested JSON schema all validate with `jsonschema`; json_object answers always parse."""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from lmforge.formats.loader import load
from tests.server_util import live_server

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "the city's name"}},
                  "required": ["city"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get today's weather in a city",
                                            "parameters": WEATHER_SCHEMA}}
QUESTION = "What is the weather like in Paris today?"
RESULT = {"city": "Paris", "temperature_celsius": 21, "sky": "sunny"}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                              "country": {"type": "string", "maxLength": 24}},
             "required": ["city", "country"], "additionalProperties": False},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3}},
    "required": ["name", "age", "home", "hobbies"], "additionalProperties": False}


@pytest.fixture(scope="module")
def client():
    with live_server(load(MODEL), default_max_tokens=256) as (url, _):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)


def streamed(stream) -> tuple[str, list[dict], str]:
    """(content, tool calls, finish_reason) rebuilt from a chat stream's deltas."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or ():
                call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = d.id or call["id"]
                call["name"] = (d.function.name if d.function else None) or call["name"]
                call["arguments"] += (d.function.arguments if d.function else None) or ""
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calling_loop(client, stream):
    """Streamed: parallel_tool_calls false (exactly one call); not streamed: the default, every call answered."""
    messages = [{"role": "user", "content": QUESTION}]
    ask = dict(model=MODEL, tools=[WEATHER], temperature=0, max_tokens=96)
    if stream:
        _, calls, finish = streamed(client.chat.completions.create(
            messages=messages, tool_choice="required", parallel_tool_calls=False, stream=True, **ask))
        assert len(calls) == 1
    else:
        r = client.chat.completions.create(messages=messages, tool_choice="required", **ask)
        assert r.choices[0].message.content is None
        finish = r.choices[0].finish_reason
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in r.choices[0].message.tool_calls]
    assert finish == "tool_calls" and calls and len({c["id"] for c in calls}) == len(calls)
    for call in calls:
        assert call["name"] == "get_weather"
        arguments = json.loads(call["arguments"])
        jsonschema.validate(arguments, WEATHER_SCHEMA)
        assert "paris" in arguments["city"].lower()
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls]})
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": json.dumps(RESULT)} for c in calls]
    if stream:
        answer, calls, finish = streamed(client.chat.completions.create(messages=messages, stream=True, **ask))
    else:
        r = client.chat.completions.create(messages=messages, **ask)
        answer, calls, finish = r.choices[0].message.content, r.choices[0].message.tool_calls or [], \
            r.choices[0].finish_reason
    print(repr(answer))
    assert finish in ("stop", "length") and calls == [] and answer.strip()
    assert "21" in answer or "sunny" in answer.lower(), answer  # the answer uses the tool's result


def test_100_constrained_generations_validate(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    messages = [{"role": "user", "content": "Invent a person and describe them as JSON."}]

    def ask(seed: int, n: int):
        return client.chat.completions.create(model=MODEL, messages=messages, response_format=fmt, n=n, seed=seed,
                                              temperature=0.8, max_tokens=160).choices

    with ThreadPoolExecutor(13) as pool:
        choices = [c for batch in pool.map(ask, range(0, 1300, 100), [8] * 12 + [4]) for c in batch]
    assert len(choices) == 100
    documents = [json.loads(c.message.content) for c in choices]
    for document in documents:
        jsonschema.validate(document, PERSON)
    assert len({json.dumps(d) for d in documents}) > 50  # sampled documents, not one repeated


def test_json_object_always_parses(client):
    messages = [{"role": "user", "content": "Give me a small JSON object with the name, age and color of a cat."}]
    choices = client.chat.completions.create(model=MODEL, messages=messages, response_format={"type": "json_object"},
                                             n=8, seed=0, temperature=0.7, max_tokens=300).choices
    for choice in choices:
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(json.loads(choice.message.content), dict)
