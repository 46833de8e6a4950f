"""The output rail around `generate_stream` (one prompt), for `lmforge generate` and `lmforge chat`: each step's
text is what the rail releases; a block ends the stream with finish_reason "content_filter" and stops decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from lmforge.safety.rails import CONTENT_FILTER, OutputRail


def guard_steps(steps: Iterator, rail: OutputRail) -> Iterator:
    """Yield `steps`' one-row lists with the released text; close `steps` (stop decoding) at a block."""
    try:
        for (event,) in steps:
            text = rail.feed(event.text)
            if event.finish_reason is not None and not rail.blocked:
                text += rail.finish()
            if rail.blocked:
                yield (replace(event, text="", finish_reason=CONTENT_FILTER),)
                return
            yield (replace(event, text=text),)
        if not rail.blocked:  # the steps ended without a finish_reason (cannot happen with generate_stream)
            rest = rail.finish()
            if rest:
                from lmforge.generation.request_state import StepOutput

                yield (StepOutput(token=-1, text=rest),)
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()
