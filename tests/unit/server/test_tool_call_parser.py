"""The Hermes `<tool_call>` parser (issue 25 item 2): whatever way the text is cut into streamed pieces, the calls
and the content come out the same as from the whole text; argument fragments concatenate to the call's arguments;
text that is not a call to a declared function stays content, and content never leaks a partial tag."""

import json

import pytest

from lmforge.server.tool_calls import ToolCallParser

NAMES = frozenset({"get_weather", "add"})
TWO_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}\n</tool_call>\n'
             '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": {"c": "}"}}}\n</tool_call>')


def run(text: str, pieces: list[int], incremental: bool):
    """Feed `text` cut at `pieces`; (content, calls rebuilt from the deltas as a client does, parser.calls)."""
    parser = ToolCallParser(NAMES, incremental=incremental)
    content, built = "", {}
    cuts = [0, *pieces, len(text)]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        piece, deltas = parser.feed(text[a:b], final=i == len(cuts) - 2)
        content += piece
        for d in deltas:
            call = built.setdefault(d["index"], {"id": None, "name": None, "arguments": ""})
            if "id" in d:
                assert call["id"] is None and d["type"] == "function" and d["function"]["arguments"] == ""
                call["id"], call["name"] = d["id"], d["function"]["name"]
            else:
                call["arguments"] += d["function"]["arguments"]
    return content, [built[i] for i in sorted(built)], parser.calls


@pytest.mark.parametrize("incremental", [False, True])
def test_every_way_of_cutting_the_stream_gives_the_same_calls(incremental):
    _, whole, _ = run(TWO_CALLS, [], incremental)
    assert [c["name"] for c in whole] == ["get_weather", "add"]
    assert json.loads(whole[1]["arguments"]) == {"a": 1, "b": {"c": "}"}}
    for size in (1, 2, 3, 7):
        content, calls, final = run(TWO_CALLS, list(range(size, len(TWO_CALLS), size)), incremental)
        assert content == ""
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == \
               [(c["name"], json.loads(c["arguments"])) for c in whole]
        assert [c["function"]["arguments"] for c in final] == [c["arguments"] for c in calls]
        assert len({c["id"] for c in calls}) == 2


def test_text_around_calls_is_content_and_partial_tags_are_held_back():
    text = "Let me check. <tool_cal is not a tag\n" + TWO_CALLS
    for size in (1, 4):
        content, calls, _ = run(text, list(range(size, len(text), size)), incremental=False)
        assert content == "Let me check. <tool_cal is not a tag" and len(calls) == 2  # the newline before a call
    parser = ToolCallParser(NAMES)
    assert parser.feed("Paris is the capital <tool_")[0] == "Paris is the capital"  # the space waits for text
    assert parser.feed("", final=True)[0] == " <tool_"


def test_undeclared_functions_and_broken_json_stay_content():
    for body in ('{"name": "rm_rf", "arguments": {}}', '{"name": "add", "arguments": {"a": 1', "not json"):
        text = f"<tool_call>\n{body}\n</tool_call>"
        content, calls, _ = run(text, [5], incremental=False)
        assert calls == [] and content == text
    content, calls, _ = run('<tool_call>\n{"name": "add", "arguments": {"a": 1}}', [3], incremental=False)
    assert calls[0]["name"] == "add" and content == ""  # the model stopped before the closing tag


def test_plain_text_passes_through_unchanged():
    text = "The weather in Paris is sunny.\n\nBye."
    content, calls, _ = run(text, [1, 2, 10, 20], incremental=False)
    assert content == text and calls == []
