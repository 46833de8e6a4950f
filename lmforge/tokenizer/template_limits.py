"""Caps on rendering an untrusted Jinja template: a time limit, an output size limit, and no `*` / `**` that builds
a huge value in one operation. Jinja's sandbox bounds each `range` but not nested loops, so the time limit is a
trace function that watches only the frames of compiled templates (one check per template line or loop turn).
"""

import math
import sys
import time
from contextlib import contextmanager
from typing import Any

import jinja2

from lmforge.common.errors import LmforgeError

RENDER_SECONDS = 2.0  # a real chat template renders in milliseconds
RENDER_MAX_CHARS = 16 * 2**20  # the output, and any string or list one `*` may build
MAX_INT_BITS = 4096
TEMPLATE_FILENAME = "<template>"  # the file name of code that jinja compiled from a string


class RenderTimeout(Exception):
    """The render passed its time limit (raised inside the template's own code)."""


def _too_large(value: Any, max_chars: int) -> bool:
    """A string or list longer than max_chars, or a `namespace()` holding one (where `{% set ns.s = ns.s ~ ns.s %}`
    keeps it)."""
    if isinstance(value, str | list | tuple | dict):
        return len(value) > max_chars
    if isinstance(value, jinja2.utils.Namespace):
        return any(_too_large(v, max_chars) for v in value._Namespace__attrs.values())
    return False


@contextmanager
def deadline(seconds: float, max_chars: int | None = None):
    """Raise RenderTimeout in template code once `seconds` have passed, and LmforgeError when one of its variables
    holds more than `max_chars` (doubling `{% set s = s ~ s %}` in a loop reaches 1 GiB in 30 turns, long before
    any time limit). Other code on this thread runs untraced (its frames get no line events), and the previous
    trace function (a debugger, coverage) is restored after."""
    end = time.thread_time() + seconds  # this thread's CPU time: a runaway template spends it, a process starved on
    # a busy machine does not (wall-clock seconds failed renders of SFT runs at load 17 on 2 cores)

    def on_line(frame, event, arg):
        if time.thread_time() > end:
            raise RenderTimeout
        if max_chars is not None and any(_too_large(v, max_chars) for v in frame.f_locals.values()):
            raise LmforgeError(f"a chat template variable passed {max_chars} characters and was stopped")
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == TEMPLATE_FILENAME else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


def render_capped(compiled: jinja2.Template, variables: dict, time_limit: float, max_chars: int) -> str:
    """`compiled.render(**variables)`, stopped after `time_limit` seconds (RenderTimeout) or `max_chars` of output."""
    with deadline(time_limit, max_chars):
        parts, size = [], 0
        for part in compiled.generate(**variables):
            size += len(part)
            if size > max_chars:
                raise LmforgeError(f"chat template output passed {max_chars} characters and was stopped")
            parts.append(part)
    return "".join(parts)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse (SecurityError) `a + b` or `seq * n` longer than RENDER_MAX_CHARS and `a ** b` wider than MAX_INT_BITS."""
    if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple) and \
            len(left) + len(right) > RENDER_MAX_CHARS:
        raise jinja2.exceptions.SecurityError(f"'+' would build {len(left) + len(right)} items")
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > RENDER_MAX_CHARS:
                raise jinja2.exceptions.SecurityError(f"'*' would build {len(seq) * count} items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
            right * math.log2(abs(left)) > MAX_INT_BITS:
        raise jinja2.exceptions.SecurityError(f"'**' would build a number of more than {MAX_INT_BITS} bits")
