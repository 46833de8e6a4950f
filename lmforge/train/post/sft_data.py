"""Instruction-tuning data in the three common shapes, read into one: a conversation is a list of
{"role", "content"} messages (roles system, user, assistant, tool). ChatML-style `{"messages": [...]}` JSONL
(OpenAI fine-tuning format), Stanford Alpaca (instruction / input / output) and ShareGPT (`conversations` of
{"from", "value"}); each file is a JSON array or JSON lines, and `auto` detects the format per file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lmforge.common.errors import LmforgeError

FORMATS = ("auto", "messages", "alpaca", "sharegpt")
ROLES = ("system", "user", "assistant", "tool")
# ShareGPT speakers (incl. the LLaMA-Factory / Glaive function-calling variants) -> ChatML roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "function_call": "assistant", "system": "system", "tool": "tool", "observation": "tool",
                  "function": "tool", "function_response": "tool"}

Conversation = list[dict]


def read_chat_data(paths, format: str = "auto") -> list[Conversation]:
    """All conversations of the given files, in order."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: list[Conversation] = []
    for path in paths:
        out += read_chat_file(path, format)
    return out


def read_chat_file(path: str | Path, format: str = "auto") -> list[Conversation]:
    return [conversation for _, conversation in read_chat_records(path, format)]


def read_chat_records(path: str | Path, format: str = "auto") -> list[tuple[dict, Conversation]]:
    """(the record as read, its conversation) of every record of one file, in order (`lmforge data select` writes
    the records it keeps unchanged)."""
    if format not in FORMATS:
        raise LmforgeError(f"format={format!r} is not known; allowed: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"chat data file not found: {path}")
    conversations, detected = [], None if format == "auto" else format
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise LmforgeError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if detected is None:
            detected = detect_format(record, where)
        convert = {"messages": _from_messages, "alpaca": _from_alpaca, "sharegpt": _from_sharegpt}[detected]
        conversations.append((record, check_conversation(convert(record, where), where)))
    if not conversations:
        raise LmforgeError(f"{path} holds no conversations")
    return conversations


def detect_format(record: dict, where: str) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise LmforgeError(f"{where}: cannot tell the format from the keys {sorted(record)}: expected 'messages' "
                       f"(ChatML messages), 'conversations' (ShareGPT) or 'instruction' + 'output' (Alpaca)")


def check_conversation(messages: Conversation, where: str) -> Conversation:
    """Roles known, contents strings, not empty, not opening with the assistant, at least one assistant turn."""
    if not messages:
        raise LmforgeError(f"{where}: empty conversation")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise LmforgeError(f"{where}: message {i} has role {m['role']!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise LmforgeError(f"{where}: message {i} ({m['role']}) has content of type "
                               f"{type(m['content']).__name__}; expected a string")
    if messages[0]["role"] == "assistant":
        raise LmforgeError(f"{where}: the conversation opens with an assistant turn; it needs a user (or system) "
                           f"message first")
    if not any(m["role"] == "assistant" for m in messages):
        raise LmforgeError(f"{where}: no assistant turn, so nothing to learn from")
    return messages


def _records(path: Path) -> Iterator[tuple[str, object]]:
    """(location, record): a JSON array's items ("FILE record N") or JSON lines ("FILE line N")."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise LmforgeError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
        for i, record in enumerate(records):
            yield f"{path} record {i}", record
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LmforgeError(f"{path} line {n}: not valid JSON ({err.msg})") from None
        yield f"{path} line {n}", record


def _field(record: dict, key: str, where: str, required: bool = True):
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise LmforgeError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _from_messages(record: dict, where: str) -> Conversation:
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise LmforgeError(f"{where}: 'messages' must be a list of {{'role', 'content'}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise LmforgeError(f"{where}: message {i} must be an object with 'role' and 'content', got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _from_alpaca(record: dict, where: str) -> Conversation:
    instruction, output = _field(record, "instruction", where), _field(record, "output", where)
    extra, system = _field(record, "input", where, False), _field(record, "system", where, False)
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _from_sharegpt(record: dict, where: str) -> Conversation:
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise LmforgeError(f"{where}: 'conversations' must be a list of {{'from', 'value'}} objects")
    out = [{"role": "system", "content": record["system"]}] if isinstance(record.get("system"), str) else []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise LmforgeError(f"{where}: turn {i} must be an object with 'from' and 'value', got {t!r:.80}")
        role = SHAREGPT_ROLES.get(str(t["from"]).lower())
        if role is None:
            raise LmforgeError(f"{where}: turn {i} is from {t['from']!r}; allowed: {', '.join(SHAREGPT_ROLES)}")
        out.append({"role": role, "content": t["value"]})
    return out
