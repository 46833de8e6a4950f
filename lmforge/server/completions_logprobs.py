"""What lm-evaluation-harness's `local-completions` model needs from `/v1/completions`, and its tokenizer routes.

- `echo`: each choice starts with its prompt; with `logprobs` every prompt token carries its log-probability (None for
  the first, which nothing predicts) and its `logprobs` most likely alternatives. lm-eval scores a continuation by
  sending context + continuation token ids with `echo=true, logprobs=1, max_tokens=1` and summing the continuation's
  prompt logprobs (is_greedy: each equals the best alternative). The prompt is scored by
  lmforge.eval.loglikelihood in the engine thread, between steps (the engine owns the model).
- `max_tokens: 0` scores the prompt only (no completion), as vLLM allows; it needs `echo` and no streaming.
- GET /tokenizer_info, POST /tokenize, POST /detokenize in vLLM's shapes: lm-eval detects them
  (`tokenizer_backend=auto`) and then tokenizes with this server's tokenizer; no Hugging Face download.
"""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lmforge.server.protocol import OpenAIError


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str
    add_special_tokens: bool = True
    model: str | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    tokens: list[int] = Field(max_length=1_000_000)
    model: str | None = None


def check_echo(body, kind: str) -> None:
    """Refuse what this module does not serve: max_tokens 0 without echo, or streamed."""
    if kind != "completion" or body.max_tokens != 0:
        return
    if not body.echo:
        raise OpenAIError(400, "max_tokens=0 returns no completion: set echo=true to get the prompt (and logprobs "
                               "for its tokens)", param="max_tokens")
    if body.stream:
        raise OpenAIError(400, "max_tokens=0 (the prompt only) is answered in one response: set stream=false",
                          param="stream")


def _entries(served, prompt_ids: list[int], score) -> list:
    """(token text, logprob, [(alt text, alt logprob)]) per prompt token; the first has None, None."""
    text = served.token_text
    entries = [(text(prompt_ids[0]), None, None)]
    for token, logprob, top in zip(prompt_ids[1:], score.logprobs, score.top or [[]] * len(score.logprobs),
                                   strict=True):
        entries.append((text(token), logprob, [(text(t), v) for t, v in top]))
    return entries


async def add_echo(engine, served, body, choices) -> None:
    """Start each choice with its prompt (text, and logprobs when asked); no-op without `echo`."""
    if not getattr(body, "echo", False):
        return
    from lmforge.eval.loglikelihood import ContinuationScore, score_continuations

    scores = {}
    if body.logprobs is not None:
        prompts = list({tuple(c.prompt_ids): c.prompt_ids for c in choices if len(c.prompt_ids) > 1}.values())
        if prompts:
            model, top_k = engine.llm.model, body.logprobs
            results = await engine.call(lambda: score_continuations(model, [(p[:1], p[1:]) for p in prompts],
                                                                    top_k=top_k))
            scores = {tuple(p): r for p, r in zip(prompts, results, strict=True)}
    texts = {}
    for c in choices:
        key = tuple(c.prompt_ids)
        if key not in texts:
            texts[key] = await run_in_threadpool(served.tokenizer.decode, c.prompt_ids)
        c.text = texts[key]
        if body.logprobs is not None:
            c.logprobs = _entries(served, c.prompt_ids, scores.get(key, ContinuationScore()))


def echo_chunks(body, rid, created, model, choices, usage: bool) -> list[dict]:
    """The first streamed chunks of an echoed completion: each choice's prompt (and its logprobs)."""
    from lmforge.server.responses import Delta, completion_chunk

    if not getattr(body, "echo", False):
        return []
    return [completion_chunk(rid, created, model, c, delta=Delta(c.text, list(c.logprobs)), usage=usage)
            for c in choices]


def register_tokenizer_routes(app, served, max_body_bytes: int) -> None:
    """vLLM's tokenizer routes, which lm-eval's remote tokenizer calls."""

    async def _body(request: Request, model: type[BaseModel]):
        from lmforge.server.app import decode_body, read_body

        return await run_in_threadpool(decode_body, await read_body(request, max_body_bytes), model)

    tok = served.tokenizer

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        return {"tokenizer_class": "lmforge.Tokenizer", "model": served.name, "model_max_length": served.context_len,
                "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                "unk_token": tok.unk_token, "vocab_size": tok.vocab_size, "chat_template": tok.chat_template}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await _body(request, TokenizeRequest)
        try:
            ids = await run_in_threadpool(tok.encode, body.prompt, body.add_special_tokens)
        except Exception as err:  # noqa: BLE001 - whatever the tokenizer refuses is the client's text
            raise OpenAIError(400, f"the tokenizer cannot encode this text: {str(err)[:200]}", param="prompt") from None
        return {"tokens": ids, "count": len(ids), "max_model_len": served.context_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await _body(request, DetokenizeRequest)
        bad = next((t for t in body.tokens if not 0 <= t < tok.vocab_size), None)
        if bad is not None:
            raise OpenAIError(400, f"token id {bad} is outside the vocabulary [0, {tok.vocab_size})", param="tokens")
        return {"prompt": await run_in_threadpool(tok.decode, body.tokens)}
