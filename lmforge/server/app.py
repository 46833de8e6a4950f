"""The OpenAI-compatible HTTP server (FastAPI): chat and text completions, streamed as Server-Sent Events.

Every client mistake becomes OpenAI's error JSON with a 4xx status; the engine runs in its own thread
(async_engine.py); a client that disconnects, streaming or not, has its requests aborted and its KV blocks freed.
Parsing, templating and tokenising run in worker threads, so a large body never stalls the event loop (/health).
"""

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from lmforge.common.errors import LmforgeError
from lmforge.safety.moderation import Moderator
from lmforge.server.async_engine import AsyncEngine
from lmforge.server.completions_logprobs import add_echo, check_echo, echo_chunks, register_tokenizer_routes
from lmforge.server.guard import OPEN_PATHS, Guard, allowed_host_names
from lmforge.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from lmforge.server.metrics import Metrics
from lmforge.server.moderations import add_moderations_route
from lmforge.server.page import PAGE_PATHS, add_page_routes
from lmforge.server.protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from lmforge.server.responses import (
    ChoiceState,
    Delta,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
)
from lmforge.server.safety_hook import SafetyHook
from lmforge.server.tools import tool_call_parser


def error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _validation_error(err: ValidationError) -> OpenAIError:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    return OpenAIError(400, f"invalid value for {param}: {first.get('msg')}", param=param)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def decode_body(raw: bytes, model: type[BaseModel]):
    """JSON bytes -> a validated request (runs in a worker thread: a large body must not stall the event loop)."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
        json.dumps(data, ensure_ascii=False).encode()  # an unpaired surrogate escape ("\ud800") is not text
    except (ValueError, RecursionError, UnicodeError) as err:  # JSONDecodeError, too many digits, nesting depth
        raise OpenAIError(400, f"the request body is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except (ValidationError, RecursionError) as err:
        raise (_validation_error(err) if isinstance(err, ValidationError) else
               OpenAIError(400, "the request body is nested too deeply")) from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body of a JSON POST, read as it arrives and refused (413) as soon as it passes `max_bytes`, with or
    without Content-Length (a chunked upload is never read whole)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise OpenAIError(415, f"the request body must be sent with 'Content-Type: application/json', got "
                               f"{media_type[:100] or 'none'!r}", code="unsupported_media_type")
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > max_bytes:
        raise OpenAIError(413, f"request body of {size} bytes exceeds the limit of {max_bytes}")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise OpenAIError(413, f"request body of more than {max_bytes} bytes exceeds the limit of {max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


async def until_disconnected(request: Request, poll_s: float = 0.25) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(poll_s)


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


def create_app(engine: AsyncEngine, served, api_key: str | None = None, max_body_bytes: int = 4 * 2**20,
               allowed_hosts: frozenset[str] | None = allowed_host_names("127.0.0.1"),
               cors_origins: list[str] | tuple[str, ...] = (), rails=None, embedder=None,
               embedding_name: str | None = None) -> FastAPI:
    """`served` turns a validated request into (prompt ids, [SamplingParams per choice]) and decodes tokens.
    `allowed_hosts`: names the Host header may carry (None: any); `cors_origins`: web origins allowed by CORS.
    `rails`: a lmforge.safety Rails applied to every completion (safety_hook.py) and used by /v1/moderations.
    `embedder` (lmforge.rag.embedder): serve /v1/embeddings with it, as model `embedding_name`."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    metrics: Metrics = engine.metrics
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, routes=app.router.routes, metrics=metrics, api_key=api_key,
                       allowed_hosts=allowed_hosts, open_paths=OPEN_PATHS + PAGE_PATHS)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, err: OpenAIError):
        return error_response(err)

    @app.exception_handler(404)
    async def _not_found(request: Request, err):
        return error_response(OpenAIError(404, f"no route {request.method} {request.url.path[:200]}",
                                          code="not_found"))

    @app.exception_handler(405)
    async def _bad_method(request: Request, err):
        return error_response(OpenAIError(405, f"method {request.method} not allowed on {request.url.path}"))

    hook = SafetyHook(rails, metrics) if rails is not None else None
    add_moderations_route(app, Moderator(rails.policy if rails is not None else None),
                          lambda request: read_body(request, max_body_bytes), decode_body)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def get_metrics():
        return PlainTextResponse(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    add_page_routes(app, engine.llm.stats)  # the web chat page at / and the engine's figures at /stats

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "lmforge"}]}

    def prepare(raw: bytes, kind: str):
        """Worker thread: parse, validate, template and tokenise; check every choice against the engine."""
        body = decode_body(raw, ChatCompletionRequest if kind == "chat" else CompletionRequest)
        check_echo(body, kind)
        if body.model != served.name:
            raise OpenAIError(404, f"the model {body.model[:200]!r} does not exist; this server serves "
                                   f"{served.name!r}", param="model", code="model_not_found")
        served.take_images(body, kind)  # image parts decoded (400 if bad), marks in their place
        verdict = hook.check_request(body, kind) if hook is not None else None  # input rail (may redact)
        jobs = served.prepare(body, kind, engine.llm.max_request_tokens)
        pairs = [(prompt_ids, params) for prompt_ids, per_choice in jobs for params in per_choice]
        if len(pairs) > engine.max_pending:
            raise OpenAIError(400, f"the request asks for {len(pairs)} choices (prompts x n); this server runs at "
                                   f"most {engine.max_pending} requests", param="n")
        for prompt_ids, params in pairs:
            try:
                engine.llm.validate(prompt_ids, params, served.num_images(body))
            except LmforgeError as err:
                raise OpenAIError(400, str(err)) from None
        return body, pairs, verdict

    async def run(request: Request, kind: str):
        raw = await read_body(request, max_body_bytes)
        body, pairs, verdict = await run_in_threadpool(prepare, raw, kind)
        if engine.num_pending + len(pairs) > engine.max_pending:
            raise OpenAIError(429, f"the server is at capacity ({engine.max_pending} requests); retry later",
                              type_="rate_limit_error", code="rate_limit_exceeded")
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        prefix = served.answer_prefix(body) if kind == "chat" else ""  # a prefilled answer start (--rag)
        choices = [ChoiceState(index=i, prompt_ids=p, params=params, text=prefix,
                               tool_parser=tool_call_parser(body) if kind == "chat" else None)
                   for i, (p, params) in enumerate(pairs)]
        await add_echo(engine, served, body, choices)  # completions' echo: the prompt (and its logprobs) first
        if kind == "completion" and body.max_tokens == 0:
            for c in choices:
                c.finish_reason = "length"
            return completion_response(rid, created, served.name, choices, body.logprobs is not None)
        streams = [engine.generate(c.prompt_ids, c.params, served.images_of(body)) for c in choices]
        if hook is not None:  # output rail: hold back, redact, or end the answer with "content_filter"
            streams = [hook.guard(s, verdict) for s in streams]
        if body.stream:
            return StreamingResponse(_stream(kind, body, rid, created, choices, streams),
                                     media_type="text/event-stream")
        if not await _collect_unless_disconnected(request, choices, streams):
            metrics.inc("disconnected_requests_total", help="non-streaming requests whose client left (aborted)")
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        if kind == "chat":
            return {**chat_response(rid, created, served.name, choices, body.logprobs),
                    **served.response_extras(body, choices)}
        return completion_response(rid, created, served.name, choices, body.logprobs is not None)

    async def _collect_unless_disconnected(request: Request, choices, streams) -> bool:
        """Run the choices to the end; False if the client left first (its requests are aborted in the engine)."""
        async def collect():
            async for index, out in _merge(streams):
                choices[index].update(out, served, metrics)

        collecting = asyncio.ensure_future(collect())
        watching = asyncio.ensure_future(until_disconnected(request))
        try:
            await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (collecting, watching):
                if not task.done():
                    task.cancel()
            await asyncio.gather(collecting, watching, return_exceptions=True)
        if collecting.cancelled():
            return False
        collecting.result()  # an engine error for one choice raises its OpenAIError
        return True

    async def _stream(kind, body, rid, created, choices, streams):
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunk = chat_chunk if kind == "chat" else completion_chunk
        try:
            if kind == "chat":
                for c in choices:
                    yield _sse({**chunk(rid, created, served.name, c, role=True, usage=include_usage),
                                **served.response_extras(body, [])})
                    if c.text:  # the prefilled start of the answer
                        yield _sse(chunk(rid, created, served.name, c, delta=Delta(c.text), usage=include_usage))
            else:  # completions' echo: the prompt first
                for body_ in echo_chunks(body, rid, created, served.name, choices, include_usage):
                    yield _sse(body_)
            async for index, out in _merge(streams):
                c = choices[index]
                delta = c.update(out, served, metrics)
                if delta.text or delta.logprobs or delta.tool_calls or out.finished:
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

    register_tokenizer_routes(app, served, max_body_bytes)

    if embedder is not None:
        from lmforge.server.embeddings import add_embeddings_route

        add_embeddings_route(app, embedder, embedding_name or embedder.name,
                             lambda request: read_body(request, max_body_bytes), decode_body)
    return app


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
