"""`POST /v1/embeddings` (OpenAI's embeddings API) served by a sentence embedder (lmforge.rag.embedder).

`input`: a string, a list of strings, a list of token ids or a list of token-id lists (at most 2048 inputs);
`encoding_format`: "float" (JSON numbers) or "base64" (little-endian float32 bytes, what the official client asks
for by default and decodes itself); `dimensions`: keep the first N components, re-normalised (Matryoshka
truncation); `usage` counts the tokens embedded. Strings longer than the model's window are truncated to it, as
sentence-transformers does; token-id inputs longer than it are refused.
"""

import base64
import threading
from typing import Literal

import numpy as np
from fastapi import Request
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from lmforge.common.errors import LmforgeError
from lmforge.server.protocol import STRICT, OpenAIError

MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    model_config = STRICT

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _check_input(cls, value):
        items = [value] if isinstance(value, str) else value
        if not items or any(item in ("", []) for item in items):
            raise ValueError("input must not be empty, and no input may be empty")
        if len(items) > MAX_INPUTS and not all(isinstance(i, int) for i in items):
            raise ValueError(f"input may hold at most {MAX_INPUTS} items, got {len(items)}")
        return value


def add_embeddings_route(app, embedder, name: str, read_body, decode_body) -> None:
    """Register `/v1/embeddings` on `app` for `embedder`, served under the model id `name`.
    `read_body(request)` and `decode_body(raw, model)` are the app's own size-limited reader and validator."""
    lock = threading.Lock()  # one forward at a time: concurrent requests would only fight over the cores

    def compute(raw: bytes) -> dict:
        body = decode_body(raw, EmbeddingRequest)
        if body.model != name:
            raise OpenAIError(404, f"the model {body.model[:200]!r} does not exist; this server embeds with "
                                   f"{name!r}", param="model", code="model_not_found")
        items = body.input
        if isinstance(items, str) or (items and isinstance(items[0], int)):
            items = [items]
        try:
            ids = [embedder.tokenize([x])[0] if isinstance(x, str) else list(x) for x in items]
            with lock:
                vectors = embedder.embed_ids(ids)
            from lmforge.rag.embedder import truncate_dimensions

            vectors = truncate_dimensions(vectors, body.dimensions, embedder.normalize).numpy()
        except LmforgeError as err:
            raise OpenAIError(400, str(err), param="input" if "dimensions" not in str(err) else "dimensions") \
                from None
        tokens = sum(len(x) for x in ids)
        return {"object": "list", "model": name,
                "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        raw = await read_body(request)
        return await run_in_threadpool(compute, raw)


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()
