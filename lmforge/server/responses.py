"""OpenAI response bodies: chat.completion(.chunk) and text_completion, built from each choice's progress.

A `ChoiceState` accumulates one choice's text, tokens and log-probabilities as engine outputs arrive, and records
time to first token and inter-token latency for the metrics.
"""

import time
from dataclasses import dataclass, field


@dataclass
class Delta:
    text: str = ""
    logprobs: list = field(default_factory=list)  # [(token text, logprob, [(alt text, alt logprob)])]
    tool_calls: list = field(default_factory=list)  # OpenAI tool_calls delta entries (server/tool_calls.py)


@dataclass
class ChoiceState:
    index: int
    prompt_ids: list[int]
    params: object
    text: str = ""
    num_tokens: int = 0
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    last_token_at: float | None = None
    tool_parser: object = None  # a ToolCallParser when the request offers tools: the text becomes tool_calls

    def update(self, out, served, metrics) -> Delta:
        now = time.perf_counter()
        if out.new_token_ids:
            if self.last_token_at is None:
                metrics.observe("time_to_first_token_seconds", now - self.started, "request start to first token")
            else:
                metrics.observe("inter_token_latency_seconds", (now - self.last_token_at) / len(out.new_token_ids),
                                "time between streamed tokens")
            self.last_token_at = now
            metrics.inc("generation_tokens_total", len(out.new_token_ids), help="tokens generated")
        self.num_tokens = len(out.output_ids)
        delta = Delta(out.text_delta, [(served.token_text(lp.token_id), lp.logprob,
                                        [(served.token_text(t), v) for t, v in lp.top]) for lp in out.logprobs])
        if self.tool_parser is not None:
            delta.text, delta.tool_calls = self.tool_parser.feed(delta.text, final=out.finished)
        self.text += delta.text
        self.logprobs += delta.logprobs
        if out.finished:
            self.finish_reason = "stop" if out.finish_reason in ("stop", "abort") else out.finish_reason
            if self.tool_parser is not None and self.tool_parser.calls and self.finish_reason == "stop":
                self.finish_reason = "tool_calls"
            metrics.inc("prompt_tokens_total", len(self.prompt_ids), help="prompt tokens processed")
            metrics.observe("request_latency_seconds", now - self.started, "request start to last token")
        return delta


def count_usage(choices: list[ChoiceState]) -> dict:
    prompt = sum(len(c.prompt_ids) for c in {id(c.prompt_ids): c for c in choices}.values())
    completion = sum(c.num_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_logprobs(entries) -> dict:
    return {"content": [{"token": tok, "logprob": lp, "bytes": list(tok.encode()),
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top]}
                        for tok, lp, top in entries]}


def _completion_logprobs(entries, offset: int = 0) -> dict:
    tokens, offsets = [], []
    for tok, _, _ in entries:
        offsets.append(offset)
        tokens.append(tok)
        offset += len(tok)
    return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [None if top is None else dict(top) for _, _, top in entries], "text_offset": offsets}


def _message(c: ChoiceState) -> dict:
    calls = c.tool_parser.calls if c.tool_parser is not None else []
    if not calls:
        return {"role": "assistant", "content": c.text}
    return {"role": "assistant", "content": c.text if c.text.strip() else None, "tool_calls": calls}


def chat_response(rid, created, model, choices, logprobs: bool) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": c.index, "message": _message(c),
                         "logprobs": _chat_logprobs(c.logprobs) if logprobs else None,
                         "finish_reason": c.finish_reason} for c in choices],
            "usage": count_usage(choices)}


def completion_response(rid, created, model, choices, logprobs: bool) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": c.index, "text": c.text,
                         "logprobs": _completion_logprobs(c.logprobs) if logprobs else None,
                         "finish_reason": c.finish_reason} for c in choices],
            "usage": count_usage(choices)}


def chat_chunk(rid, created, model, choice, delta: Delta | None = None, role: bool = False, usage: bool = False,
               usage_of=None) -> dict:
    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage_of is not None:
        return {**body, "choices": [], "usage": count_usage(usage_of)}
    if role:
        entry = {"index": choice.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None}
    else:
        entry = {"index": choice.index, "delta": ({"content": delta.text} if delta.text else {}) |
                 ({"tool_calls": delta.tool_calls} if delta.tool_calls else {}),
                 "logprobs": _chat_logprobs(delta.logprobs) if delta.logprobs else None,
                 "finish_reason": choice.finish_reason}
    return {**body, "choices": [entry], **({"usage": None} if usage else {})}


def completion_chunk(rid, created, model, choice, delta: Delta | None = None, usage: bool = False,
                     usage_of=None) -> dict:
    body = {"id": rid, "object": "text_completion", "created": created, "model": model}
    if usage_of is not None:
        return {**body, "choices": [], "usage": count_usage(usage_of)}
    entry = {"index": choice.index, "text": delta.text,
             "logprobs": _completion_logprobs(delta.logprobs) if delta.logprobs else None,
             "finish_reason": choice.finish_reason}
    return {**body, "choices": [entry], **({"usage": None} if usage else {})}
