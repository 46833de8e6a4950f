"""Chat templates: turn a list of `{"role", "content"}` messages into the prompt string a model was trained on.

Templates are Jinja2 programs shipped with models, i.e. untrusted code, so they run in jinja2's
ImmutableSandboxedEnvironment with the same globals and filters as Hugging Face transformers, and render identically.
Rendering is capped in time (a deadline checked on every template line, so nested loops stop) and in output size;
whatever a template raises (`1/0`, runaway recursion) becomes a one-line LmforgeError.
"""

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import template_limits
from lmforge.tokenizer.template_limits import RenderTimeout, check_binop, render_capped

# ChatML (OpenAI, Qwen, SmolLM): one `<|im_start|>role\ncontent<|im_end|>\n` block per message.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] -%}\n"
    "{{ raise_exception('ChatML has no role ' ~ message['role'] ~ '; allowed: system, user, assistant, tool') }}\n"
    "{%- endif -%}\n"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{ '<|im_start|>assistant\\n' }}\n"
    "{%- endif -%}\n"
)

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)

# Stanford Alpaca: a preamble (a leading system message replaces it), then per turn
# "### Instruction:\n{user}\n\n" [+ "### Input:\n{user['input']}\n\n"] and "### Response:\n{assistant}{eos}".
# A single turn renders exactly the original Alpaca training string; the generation prompt is "### Response:\n".
ALPACA_TEMPLATE = (
    "{%- set ns = namespace(has_input=false) -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'user' and message.get('input') -%}{%- set ns.has_input = true -%}{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "{{ messages[0]['content'] + '\\n\\n' }}\n"
    "{%- elif ns.has_input -%}\n"
    "{{ '" + ALPACA_PREAMBLE_WITH_INPUT + "\\n\\n' }}\n"
    "{%- else -%}\n"
    "{{ '" + ALPACA_PREAMBLE + "\\n\\n' }}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'system' -%}\n"
    "{%- if not loop.first -%}{{ raise_exception('Alpaca allows a system message only first') }}{%- endif -%}\n"
    "{%- elif message['role'] == 'user' -%}\n"
    "{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}\n"
    "{%- if message.get('input') -%}{{ '### Input:\\n' + message['input'] + '\\n\\n' }}{%- endif -%}\n"
    "{%- elif message['role'] == 'assistant' -%}\n"
    "{{ '### Response:\\n' + message['content'] + eos_token }}\n"
    "{%- if not loop.last -%}{{ '\\n\\n' }}{%- endif -%}\n"
    "{%- else -%}\n"
    "{{ raise_exception('Alpaca has no role ' ~ message['role'] ~ '; allowed: system, user, assistant') }}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{ '### Response:\\n' }}{%- endif -%}\n"
)

BUILTIN_TEMPLATES: dict[str, str] = {"chatml": CHATML_TEMPLATE, "alpaca": ALPACA_TEMPLATE}

# Names under which a message's reasoning travels; transformers copies it to all of them.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def render_chat_template(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    bos_token: str = "",
    eos_token: str = "",
    time_limit: float | None = None,
    max_chars: int | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` with a Jinja chat `template`, as transformers' `apply_chat_template(tokenize=False)` does.

    Extra keyword arguments (`tools`, `documents`, `pad_token`, custom flags...) become template variables.
    Raises LmforgeError for a malformed conversation, a template syntax error, `raise_exception(...)` in the
    template, any error the template raises, any attempt to reach unsafe attributes (sandbox escape), a render
    longer than `time_limit` seconds or an output longer than `max_chars` (defaults: template_limits.RENDER_*).
    """
    if not isinstance(template, str) or not template:
        raise LmforgeError(f"chat template must be a non-empty string, got {template!r}")
    chat = _alias_reasoning_fields(_validate_messages(messages))
    variables = {"tools": None, "documents": None, **_plain(kwargs, "template argument")}
    variables.update(
        messages=chat,
        add_generation_prompt=bool(add_generation_prompt),
        bos_token=bos_token if bos_token is not None else "",
        eos_token=eos_token if eos_token is not None else "",
    )
    compiled = _compile(template)
    time_limit = template_limits.RENDER_SECONDS if time_limit is None else time_limit
    max_chars = template_limits.RENDER_MAX_CHARS if max_chars is None else max_chars
    try:
        return render_capped(compiled, variables, time_limit, max_chars)
    except LmforgeError:
        raise
    except RenderTimeout:
        raise LmforgeError(f"chat template took more than {time_limit:g} s to render and was stopped") from None
    except jinja2.exceptions.SecurityError as err:
        raise LmforgeError(f"chat template tried an unsafe operation and was stopped: {err}") from None
    except jinja2.TemplateError as err:
        raise LmforgeError(f"chat template failed to render: {err}") from None
    except TypeError as err:  # e.g. `'text' + message['content']` when content is a list
        raise LmforgeError(f"chat template failed to render these messages: {err}") from None
    except RecursionError:
        raise LmforgeError("chat template recursed too deeply and was stopped") from None
    except Exception as err:  # noqa: BLE001 - the template is untrusted code: 1/0, int('x'), a missing key...
        raise LmforgeError(f"chat template failed to render: {type(err).__name__}: {str(err)[:200]}") from None


def _validate_messages(messages: Any) -> list[dict]:
    """Each message is a dict with a string `role` and a `content` (a string or a list of content blocks).

    Keys whose value is None are dropped first (OpenAI clients send `content=None` with tool calls), as transformers
    does; an assistant message carrying `tool_calls` may then have no content.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LmforgeError(f"messages must be a non-empty list of dicts, got {messages!r:.200}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise LmforgeError(
                f"message {index} must be a dict with 'role' and 'content', got {type(message).__name__}: "
                f"{message!r:.100}"
            )
        message = {key: value for key, value in message.items() if value is not None}
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise LmforgeError(f"message {index} needs a non-empty string 'role', got {role!r:.100}")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise LmforgeError(f"message {index} (role {role!r}) has no 'content'; every message needs one")
        if content is not None and not isinstance(content, (str, list)):
            raise LmforgeError(
                f"message {index} (role {role!r}) has content of type {type(content).__name__}; "
                "allowed: a string or a list of content blocks"
            )
        checked.append(_plain(message, f"message {index}"))
    return checked


def _alias_reasoning_fields(chat: list[dict]) -> list[dict]:
    """Copy a message's reasoning to `reasoning_content` and `thinking`, which different templates read."""
    aliased = []
    for message in chat:
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def _plain(value: Any, where: str) -> Any:
    """Rebuild `value` out of plain JSON types, so the template never sees objects with exploitable methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    # Subclasses (str enums, IntEnum, numpy floats...) carry extra methods: strip them back to the base type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key, where): _plain(item, where) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(item, where) for item in value)
    if isinstance(value, list):
        return [_plain(item, where) for item in value]
    raise LmforgeError(
        f"{where} contains a {type(value).__name__}; chat templates accept only str, int, float, bool, None, "
        "lists and dicts"
    )


class _GenerationBlock(Extension):
    """Accept transformers' `{% generation %}...{% endgeneration %}` assistant-mask markers; render the body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, so templates cannot plant dunder attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # same signature trick as jinja2's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with an underscore")


class _TemplateDict:
    """`dict(...)` for templates without exposing the dict type itself (no `dict.__subclasses__` tricks)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, but touching an unsafe attribute fails at once instead of rendering as '', and `+`,
    `*` and `**` cannot build a huge string, list or number in one operation."""

    intercepted_binops = frozenset({"+", "*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is not allowed"
        )


def _raise_exception(message: str) -> None:
    raise LmforgeError(f"chat template refused the conversation: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
    # transformers' tojson: no HTML escaping (unlike jinja's), unicode kept, json.dumps options exposed.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(), namespace=_TemplateNamespace
    )
    return env


@lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise LmforgeError(f"chat template has a syntax error on line {err.lineno}: {err.message}") from None


@lru_cache(maxsize=64)
def template_variables(template: str) -> frozenset[str]:
    """The variables a template reads from its context (e.g. whether it uses `tools`, as tool-aware templates do)."""
    try:
        return frozenset(meta.find_undeclared_variables(_environment().parse(template)))
    except jinja2.TemplateSyntaxError as err:
        raise LmforgeError(f"chat template has a syntax error on line {err.lineno}: {err.message}") from None
