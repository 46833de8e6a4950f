"""Tool calling in /v1/chat/completions, the request side: check `tools` / `tool_choice`, hand the tools to the chat
template as Hugging Face's `apply_chat_template(tools=...)` does, and build the grammar that forces a call.

A template that reads `tools` (Qwen, Hermes, Llama 3.1...) gets them, and the conversation's tool calls and results,
natively. One that does not (SmolLM2, ChatML) gets the Hermes format written into the conversation: the tools in the
system message, earlier calls as `<tool_call>{json}</tool_call>` text, results as `<tool_response>` blocks in a `tool`
turn (Hermes 2 Pro's shape: SmolLM2 answers from a result given so, and parrots it back as a user turn).
With tool_choice "required" or a named function, decoding follows a grammar: `<tool_call>` blocks whose JSON names
a declared function and whose arguments follow its JSON schema (server/structured.py, generation/grammar.py).
"""

import json
from dataclasses import dataclass, field

from lmforge.common.errors import LmforgeError
from lmforge.server.protocol import ChatCompletionRequest, OpenAIError
from lmforge.server.structured import (
    checked_schema,
    compile_grammar,
    inline_json,
    lark,
    response_schema,
    schema_grammar,
)
from lmforge.server.tool_calls import ToolCallParser
from lmforge.tokenizer.chat_template import template_variables

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MAX_PARALLEL_CALLS = 16  # calls one forced answer may hold (the grammar's bound)
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}

HERMES_TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>"
)


@dataclass(frozen=True)
class ChatPlan:
    """What a chat request turns into before tokenising: the template's inputs and the decoding grammar."""

    messages: list[dict]
    template_kwargs: dict = field(default_factory=dict)
    grammar: str | None = None
    placeholders: dict = field(default_factory=dict)  # {mark character: token id}: an image's place (images.py)


def tool_choice(body: ChatCompletionRequest) -> str:
    """The effective choice: "none", "auto", "required" or the name of the function to call."""
    choice = body.tool_choice
    if choice is None:
        return "auto" if body.tools else "none"
    return choice if isinstance(choice, str) else choice.function.name


def check_tools(body: ChatCompletionRequest) -> dict[str, dict]:
    """{name: arguments schema} of the declared tools; a 400 for duplicate names, a parameters object that is not a
    JSON schema, or a tool_choice naming no declared function (or asking for a call with no tools)."""
    schemas: dict[str, dict] = {}
    for i, tool in enumerate(body.tools or ()):
        name = tool.function.name
        if name in schemas:
            raise OpenAIError(400, f"tools[{i}]: the function name {name!r} is declared twice", param=f"tools[{i}]")
        parameters = tool.function.parameters
        schemas[name] = (NO_ARGUMENTS if parameters is None else
                         checked_schema(parameters, f"tools[{i}].function.parameters"))
    choice = tool_choice(body)
    if choice != "none" and not schemas:
        raise OpenAIError(400, f"tool_choice {choice!r} needs a non-empty 'tools' list", param="tool_choice")
    if choice not in ("none", "auto", "required") and choice not in schemas:
        raise OpenAIError(400, f"tool_choice names the function {choice!r}, which is not in tools (declared: "
                               f"{', '.join(sorted(schemas))[:300]})", param="tool_choice")
    return schemas


def tool_names(body: ChatCompletionRequest) -> frozenset[str]:
    """The functions whose calls the answer is parsed for (none when tool_choice is "none")."""
    if tool_choice(body) == "none":
        return frozenset()
    return frozenset(t.function.name for t in body.tools or ())


def tool_call_parser(body: ChatCompletionRequest) -> ToolCallParser | None:
    """The parser of one choice's answer (None when no tool is offered). Under a grammar, arguments stream in
    fragments; free text is parsed call by call."""
    names = tool_names(body)
    if not names:
        return None
    forced = tool_choice(body) not in ("none", "auto") or response_schema(body.response_format) is not None
    return ToolCallParser(names, incremental=forced)


def calls_grammar(schemas: dict[str, dict], names: list[str], parallel: bool, answer_schema=None) -> str:
    """Lark: one (or, in parallel, up to MAX_PARALLEL_CALLS) `<tool_call>\\n{"name": ..., "arguments": ...}\\n
    </tool_call>` blocks for the functions `names`; with `answer_schema`, a JSON answer is the alternative."""
    bodies = [{"type": "object", "properties": {"name": {"const": n}, "arguments": schemas[n]},
               "required": ["name", "arguments"], "additionalProperties": False} for n in names]
    body = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
    more = f' ("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel else ""
    rules = [f"calls: call{more}", f'call: "{OPEN}\\n" body "\\n{CLOSE}"', f"body: {inline_json(body)}"]
    if answer_schema is None:
        return lark("\n".join(["start: calls", *rules]))
    return lark("\n".join(["start: calls | answer", *rules, f"answer: {inline_json(answer_schema)}"]))


def chat_grammar(body: ChatCompletionRequest, schemas: dict[str, dict], served) -> str | None:
    """The grammar for this request's answer, compiled against the served tokenizer; None for free text."""
    choice = tool_choice(body)
    answer = response_schema(body.response_format)
    names = list(schemas) if choice in ("auto", "required") else [choice]
    if choice == "required" or choice not in ("none", "auto"):
        return compile_grammar(lambda: calls_grammar(schemas, names, body.parallel_tool_calls and choice == "required"),
                               served, "tools")
    if answer is None:
        return None
    if choice == "auto":  # a call or the JSON answer
        return compile_grammar(lambda: calls_grammar(schemas, names, body.parallel_tool_calls, answer), served,
                               "response_format")
    return compile_grammar(lambda: schema_grammar(answer), served, "response_format")


def _arguments(text: str):
    """A call's arguments as the template sees them: the parsed object where the JSON string parses."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _native_messages(body: ChatCompletionRequest) -> list[dict]:
    messages = []
    for m in body.messages:
        message = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments(c.function.arguments)}} for c in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        messages.append(message)
    return messages


def _hermes_messages(body: ChatCompletionRequest, tools: list[dict] | None) -> list[dict]:
    """The conversation in the Hermes format, for a template that does not read `tools`."""
    messages: list[dict] = []
    for m in body.messages:
        text = m.text()
        if m.role == "tool":
            block = f"<tool_response>\n{text}\n</tool_response>"
            if messages and messages[-1].get("tool_results"):
                messages[-1]["content"] += "\n" + block
            else:
                messages.append({"role": "tool", "content": block, "tool_results": True})  # (merged, as Qwen's)
            continue
        if m.tool_calls:
            calls = [f"{OPEN}\n" + json.dumps({"name": c.function.name, "arguments": _arguments(c.function.arguments)},
                                              ensure_ascii=False) + f"\n{CLOSE}" for c in m.tool_calls]
            text = "\n".join(([text] if text else []) + calls)
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    for message in messages:
        message.pop("tool_results", None)
    if tools:
        listing = HERMES_TOOLS_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if messages[0]["role"] == "system":
            messages[0]["content"] = messages[0]["content"] + "\n\n" + listing
        else:
            messages.insert(0, {"role": "system", "content": listing})
    return messages


def plan_chat(body: ChatCompletionRequest, served) -> ChatPlan:
    """Check the request's tools and response_format; the template's messages and kwargs, and the grammar."""
    schemas = check_tools(body)
    offered = [t.model_dump(exclude_none=True) for t in body.tools or ()] if tool_choice(body) != "none" else None
    template = served.tokenizer.chat_template
    try:
        native = bool(template) and "tools" in template_variables(template)
    except LmforgeError as err:
        raise OpenAIError(400, f"cannot render the chat template: {err}", param="messages") from None
    if native:
        messages, kwargs = _native_messages(body), ({"tools": offered} if offered else {})
    else:
        messages, kwargs = _hermes_messages(body, offered), {}
    return ChatPlan(messages, kwargs, chat_grammar(body, schemas, served))
