"""Tool calling, the response side: the model's Hermes-style `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
text parsed into OpenAI `tool_calls`, as it streams.

`ToolCallParser.feed` takes each new piece of text and returns the content that is safe to show (text that may be
the start of a `<tool_call>` is held back) and the `tool_calls` delta entries, as OpenAI streams them: a first entry
with the call's index, id, type and name (arguments ""), then argument fragments. Fragments flow as they are
generated when decoding follows the tool grammar (the form is then fixed); otherwise each call's arguments come
whole once its closing tag is read. A block that does not parse, or names an undeclared function, stays content.
"""

import json
import re
import uuid

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)')


class ToolCallParser:
    def __init__(self, names: frozenset[str], incremental: bool = False):
        """`names`: the declared functions; `incremental`: stream argument fragments (the answer follows the tool
        grammar: `{"name": "...", "arguments": ...}` in that order, compact)."""
        self.names, self.incremental = names, incremental
        self.calls: list[dict] = []  # finished calls: {"id", "type", "function": {"name", "arguments"}}
        self.buffer = ""  # text not yet released (outside a call) or the current call's body (inside)
        self.inside = False
        self.sent = 0  # inside an incremental call: characters of its arguments already streamed
        self.header: tuple[str, int] | None = None  # (name, offset of the arguments in the body), once announced
        self.pending_space = ""  # whitespace held back: shown only if text follows it

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        """(content to show, tool_calls delta entries) for the new `text`; `final` flushes what was held back."""
        self.buffer += text
        content: list[str] = []
        deltas: list[dict] = []
        while True:
            if not self.inside:
                start = self.buffer.find(OPEN)
                if start < 0:
                    break
                self._show(self.buffer[:start], content)
                self.pending_space = ""  # the whitespace just before a call is not content
                self.buffer, self.inside, self.sent, self.header = self.buffer[start + len(OPEN):], True, 0, None
                continue
            end = self.buffer.find(CLOSE)
            if end < 0:
                break
            body, self.buffer = self.buffer[:end], self.buffer[end + len(CLOSE):]
            self.inside = False
            self._show(self._finish_call(body, deltas), content)
        if self.inside:
            if final:
                self._show(self._finish_call(self.buffer, deltas, closed=False), content)
                self.buffer, self.inside = "", False
            elif self.incremental:
                self._stream_arguments(deltas)
        if not self.inside:
            keep = 0 if final else _partial_suffix(self.buffer, OPEN)
            self._show(self.buffer[:len(self.buffer) - keep], content)
            self.buffer = self.buffer[len(self.buffer) - keep:]
        if final:
            if not self.calls:
                content.append(self.pending_space)
            self.pending_space = ""
        return "".join(content), deltas

    def _show(self, text: str, content: list) -> None:
        """Release `text` but hold its trailing whitespace: it shows once more text follows (or at the end of an
        answer without calls), and is dropped when a call follows, so streamed and whole answers agree."""
        text = self.pending_space + text
        body = text.rstrip()
        self.pending_space = text[len(body):]
        if body:
            content.append(body)

    def _announce(self, name: str, deltas: list) -> None:
        index = len(self.calls)
        self.calls.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                           "function": {"name": name, "arguments": ""}})
        deltas.append({"index": index, "id": self.calls[-1]["id"], "type": "function",
                       "function": {"name": name, "arguments": ""}})

    def _fragment(self, text: str, deltas: list) -> None:
        if text:
            self.calls[-1]["function"]["arguments"] += text
            deltas.append({"index": len(self.calls) - 1, "function": {"arguments": text}})

    def _stream_arguments(self, deltas: list) -> None:
        """Inside a call that follows the grammar: announce it once its name is read, then stream its arguments up
        to the last `}` seen (what follows may be the call object's own closing brace)."""
        if self.header is None:
            match = _HEADER.match(self.buffer)
            if match is None:
                return
            name = json.loads(f'"{match.group(1)}"')
            if name not in self.names:
                return
            self.header = (name, match.end())
            self._announce(name, deltas)
        start = self.header[1]
        last = self.buffer.rfind("}")
        if last > start + self.sent:
            self._fragment(self.buffer[start + self.sent:last], deltas)
            self.sent = last - start

    def _finish_call(self, body: str, deltas: list, closed: bool = True) -> str:
        """Complete a call from its whole body; what does not parse as a call to a declared function is content."""
        try:
            call = json.loads(body)
        except ValueError:
            call = None
        name = call.get("name") if isinstance(call, dict) else None
        arguments = call.get("arguments", call.get("parameters")) if isinstance(call, dict) else None
        if self.header is not None:  # announced and partly streamed: send the rest of the arguments text
            start = self.header[1]
            raw = body[start:body.rstrip().rfind("}")] if call is not None else body[start:]
            self._fragment(raw[self.sent:], deltas)
            self.header = None
            return ""
        if not isinstance(name, str) or name not in self.names or not isinstance(arguments, dict | str):
            return OPEN + body + (CLOSE if closed else "")
        self._announce(name, deltas)
        self._fragment(arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False), deltas)
        return ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag` (it may grow into the tag)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
