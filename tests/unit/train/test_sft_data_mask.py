"""SFT data: the three chat formats read into the same conversations (hand-written expectations), clear errors
naming the file and line, and assistant-only labels on a multi-turn conversation with system and tool messages:
the supervised tokens decode to exactly each assistant content followed by <|im_end|>, derived from the messages."""

import json

import pytest

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import train_tokenizer
from lmforge.train.post.sft_data import read_chat_data, read_chat_file
from lmforge.train.post.sft_mask import prompt_and_reference, tokenize_conversation
from lmforge.train.step import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant with a calculator tool."},
    {"role": "user", "content": "What is 23 + 41?"},
    {"role": "assistant", "content": "calc(23 + 41)"},
    {"role": "tool", "content": "64"},
    {"role": "assistant", "content": "The answer is 64."},
    {"role": "user", "content": "And twice that?"},
    {"role": "assistant", "content": "128"},
]


@pytest.fixture(scope="module")
def tok():
    texts = [m["content"] for m in CONVERSATION] * 20 + ["system user assistant tool the answer is"] * 20
    return train_tokenizer(texts, type="byte-bpe", vocab_size=300)


def _runs(ids, labels):
    """Contiguous runs of supervised tokens, as lists of ids."""
    runs, current = [], []
    for i, label in zip(ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == i
            current.append(i)
    return runs + ([current] if current else [])


def test_assistant_only_labels_multi_turn_with_system_and_tool(tok):
    out = tokenize_conversation(tok, CONVERSATION)
    assert tok.decode(out.ids) == tok.apply_chat_template(CONVERSATION)
    expected = [m["content"] + "<|im_end|>" for m in CONVERSATION if m["role"] == "assistant"]
    assert [tok.decode(run) for run in _runs(out.ids, out.labels)] == expected
    # the end-of-turn token itself is supervised, the template's newline after it is not
    im_end = tok.token_to_id("<|im_end|>")
    assert sum(label == im_end for label in out.labels) == 3
    assert sum(i == im_end for i in out.ids) == len(CONVERSATION)


def test_truncation_policy(tok):
    full = tokenize_conversation(tok, CONVERSATION)
    cut = len(full.ids) - 3  # inside the last assistant turn
    right = tokenize_conversation(tok, CONVERSATION, max_len=cut, truncation="right")
    assert right.truncated and right.ids == full.ids[:cut] and right.labels == full.labels[:cut]
    assert tokenize_conversation(tok, CONVERSATION, max_len=cut, truncation="drop") is None
    # cut before the first assistant turn: nothing left to learn from
    first = full.labels.index(next(label for label in full.labels if label != IGNORE_INDEX))
    assert tokenize_conversation(tok, CONVERSATION, max_len=first, truncation="right") is None
    with pytest.raises(LmforgeError, match="truncation"):
        tokenize_conversation(tok, CONVERSATION, truncation="left")


def test_prompt_and_reference(tok):
    prompt, reference = prompt_and_reference(tok, CONVERSATION)
    assert reference == "128"
    assert tok.decode(prompt) == tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True)


EXPECTED = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}],
    [{"role": "user", "content": "Add.\n\n2 3"}, {"role": "assistant", "content": "5"}],
]


def test_three_formats_read_the_same(tmp_path):
    messages = tmp_path / "m.jsonl"
    messages.write_text("".join(json.dumps({"messages": c}) + "\n" for c in EXPECTED))
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Hi", "output": "Hello.", "system": "Be brief."},
                                  {"instruction": "Add.", "input": "2 3", "output": "5"}]))
    sharegpt = tmp_path / "s.jsonl"
    sharegpt.write_text(json.dumps({"conversations": [{"from": "system", "value": "Be brief."},
                                                      {"from": "human", "value": "Hi"},
                                                      {"from": "gpt", "value": "Hello."}]}) + "\n\n"
                        + json.dumps({"conversations": [{"from": "human", "value": "Add.\n\n2 3"},
                                                        {"from": "gpt", "value": "5"}]}) + "\n")
    for path, fmt in ((messages, "messages"), (alpaca, "alpaca"), (sharegpt, "sharegpt")):
        assert read_chat_file(path, "auto") == EXPECTED
        assert read_chat_file(path, fmt) == EXPECTED
    assert read_chat_data([messages, alpaca]) == EXPECTED * 2


@pytest.mark.parametrize("line, message", [
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "role 'robot'"),
    ({"messages": []}, "empty conversation"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "opens with an assistant"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "content of type int"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "from 'alien'"),
    ({"instruction": "x", "output": 5}, "'output' must be a string"),
    ({"text": "x"}, "cannot tell the format"),
])
def test_malformed_records_name_file_and_line(tmp_path, line, message):
    """Line 1 is a good record of the same format (the format is detected once per file), line 2 is bad."""
    good = {"messages": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "sharegpt": {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
            "alpaca": {"instruction": "a", "output": "b"}}
    lines = [line] if "text" in line else [good[_format_of(line)], line]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(LmforgeError, match=message) as err:
        read_chat_file(path, "auto")
    assert f"{path} line {len(lines)}" in str(err.value)


def _format_of(record):
    return "messages" if "messages" in record else "sharegpt" if "conversations" in record else "alpaca"


def test_invalid_json_and_unknown_format(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"messages": [}\n')
    with pytest.raises(LmforgeError, match=r"broken.jsonl line 1: not valid JSON"):
        read_chat_file(path)
    with pytest.raises(LmforgeError, match="format='csv'"):
        read_chat_file(path, "csv")
    with pytest.raises(LmforgeError, match="not found"):
        read_chat_file(tmp_path / "missing.jsonl")
