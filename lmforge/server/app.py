"""The OpenAI-compatible HTTP server (FastAPI): chat and text completions, streamed as Server-Sent Events.

Every client mistake becomes OpenAI's error JSON with a 4xx status; the engine runs in its own thread
(async_engine.py); a client that disconnects has its request aborted and its KV blocks freed.
"""

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from lmforge.server.async_engine import AsyncEngine
from lmforge.server.metrics import Metrics
from lmforge.server.protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from lmforge.server.responses import ChoiceState, chat_chunk, chat_response, completion_chunk, completion_response


def error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _validation_error(err: ValidationError) -> OpenAIError:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    return OpenAIError(400, f"invalid value for {param}: {first.get('msg')}", param=param)


async def parse_body(request: Request, model: type[BaseModel], max_bytes: int):
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > max_bytes:
        raise OpenAIError(413, f"request body of {size} bytes exceeds the limit of {max_bytes}")
    raw = await request.body()
    if len(raw) > max_bytes:
        raise OpenAIError(413, f"request body of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OpenAIError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _validation_error(err) from None


async def _merge(streams):
    """Interleave several async iterators, yielding (index, item) as items arrive."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index, stream):
        try:
            async for item in stream:
                await queue.put((index, item, None))
        except Exception as err:  # noqa: BLE001 - handed to the consumer
            await queue.put((index, None, err))
        finally:
            await queue.put((index, None, StopAsyncIteration()))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item, err = await queue.get()
            if isinstance(err, StopAsyncIteration):
                remaining -= 1
            elif err is not None:
                raise err
            else:
                yield index, item
    finally:  # the consumer is done or gone: stop the pumps (their streams abort their requests), then close
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


def create_app(engine: AsyncEngine, served, api_key: str | None = None, max_body_bytes: int = 4 * 2**20) -> FastAPI:
    """`served` turns a validated request into (prompt ids, [SamplingParams per choice]) and decodes tokens."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, lifespan=lifespan)
    metrics: Metrics = engine.metrics

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        try:
            if api_key and request.url.path.startswith("/v1/"):
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    raise OpenAIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                                      code="invalid_api_key")
            response = await call_next(request)
        except OpenAIError as err:
            response = error_response(err)
        metrics.inc("requests_total", help="HTTP requests by path and status", path=request.url.path,
                    status=response.status_code)
        metrics.observe("http_latency_seconds", time.perf_counter() - start, "time to response headers")
        return response

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, err: OpenAIError):
        return error_response(err)

    @app.exception_handler(404)
    async def _not_found(request: Request, err):
        return error_response(OpenAIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    @app.exception_handler(405)
    async def _bad_method(request: Request, err):
        return error_response(OpenAIError(405, f"method {request.method} not allowed on {request.url.path}"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def get_metrics():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "lmforge"}]}

    async def run(request: Request, kind: str):
        body = await parse_body(request, ChatCompletionRequest if kind == "chat" else CompletionRequest,
                                max_body_bytes)
        if body.model != served.name:
            raise OpenAIError(404, f"the model {body.model!r} does not exist; this server serves {served.name!r}",
                              param="model", code="model_not_found")
        jobs = served.prepare(body, kind)  # [(prompt_ids, [params per choice])] — completions may list prompts
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        pairs = [(prompt_ids, params) for prompt_ids, per_choice in jobs for params in per_choice]
        choices = [ChoiceState(index=i, prompt_ids=p, params=params) for i, (p, params) in enumerate(pairs)]
        streams = [engine.generate(c.prompt_ids, c.params) for c in choices]
        if body.stream:
            return StreamingResponse(_stream(kind, body, rid, created, choices, streams),
                                     media_type="text/event-stream")
        async for index, out in _merge(streams):
            choices[index].update(out, served, metrics)
        if kind == "chat":
            return chat_response(rid, created, served.name, choices, body.logprobs)
        return completion_response(rid, created, served.name, choices, body.logprobs is not None)

    async def _stream(kind, body, rid, created, choices, streams):
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunk = chat_chunk if kind == "chat" else completion_chunk
        try:
            if kind == "chat":
                for c in choices:
                    yield _sse(chunk(rid, created, served.name, c, role=True, usage=include_usage))
            async for index, out in _merge(streams):
                c = choices[index]
                delta = c.update(out, served, metrics)
                if delta.text or delta.logprobs or out.finished:
                    yield _sse(chunk(rid, created, served.name, c, delta=delta, usage=include_usage))
            if include_usage:
                yield _sse(chunk(rid, created, served.name, None, usage_of=choices))
            yield "data: [DONE]\n\n"
        except OpenAIError as err:
            yield _sse(err.body())
            yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await run(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await run(request, "completion")

    return app


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
