"""How `lmforge generate` consumes a decode stream (decoder-only or encoder-decoder): each token's text goes to
stdout as it comes (unless --json), and the run is summed up as the JSON it prints: text, token counts,
finish_reason, time to the first token (prefill_s), decode speed and total time."""

import sys
import time
from collections.abc import Callable, Iterable


def stream_summary(steps: Iterable, prompt_tokens: int, echo: bool, on_event: Callable | None = None) -> dict:
    """Consume `steps` (one-sequence batches of StepEvents); on_event(event) sees each event (e.g. its logprobs)."""
    start = time.perf_counter()
    first = None
    text, tokens, finish = "", [], None
    for (event,) in steps:
        first = first or time.perf_counter()
        tokens.append(event.token)
        text += event.text
        finish = event.finish_reason
        if echo and event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        if on_event is not None:
            on_event(event)
    end = time.perf_counter()
    if echo:
        sys.stdout.write("\n")
    return {"text": text, "prompt_tokens": prompt_tokens, "completion_tokens": len(tokens), "finish_reason": finish,
            "prefill_s": round(first - start, 4),
            "decode_tok_s": round((len(tokens) - 1) / (end - first), 2) if len(tokens) > 1 else None,
            "total_s": round(end - start, 4)}
