"""`POST /v1/moderations` in OpenAI's format: `input` is a string, a list of strings, or a list of
`{"type": "text", "text": ...}` parts; each gets `flagged`, `categories` and `category_scores` from the server's
safety policy (`--safety`, else lmforge's default policy). Anything else is a 400 in OpenAI's error JSON.
"""

from __future__ import annotations

import uuid

from fastapi import Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lmforge.safety.moderation import Moderator
from lmforge.server.protocol import STRICT, OpenAIError

MAX_INPUTS = 256
DEFAULT_MODEL = "lmforge-moderation"


class ModerationRequest(BaseModel):
    model_config = STRICT

    input: str | list[str] | list[dict] = Field(...)
    model: str | None = None


def input_texts(body: ModerationRequest) -> list[str]:
    items = [body.input] if isinstance(body.input, str) else list(body.input)
    if not items:
        raise OpenAIError(400, "input must be a string or a non-empty list", param="input")
    if len(items) > MAX_INPUTS:
        raise OpenAIError(400, f"input has {len(items)} items; at most {MAX_INPUTS} per request", param="input")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            if item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise OpenAIError(400, f"input[{i}]: only {{'type': 'text', 'text': ...}} parts are supported "
                                       f"(got type {str(item.get('type'))[:40]!r})", param="input")
            item = item["text"]
        texts.append(item)
    return texts


def add_moderations_route(app, moderator: Moderator, read_body, decode_body) -> None:
    """Register the route on `app`; `read_body(request)` and `decode_body(raw, model)` are the app's own."""

    def moderate(raw: bytes) -> dict:
        body = decode_body(raw, ModerationRequest)
        return {"id": "modr-" + uuid.uuid4().hex[:24], "model": body.model or DEFAULT_MODEL,
                "results": moderator.moderate(input_texts(body))}

    @app.post("/v1/moderations")
    async def moderations(request: Request):
        return await run_in_threadpool(moderate, await read_body(request))
