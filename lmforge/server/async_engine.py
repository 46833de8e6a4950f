"""Drive the engine from asyncio: one background thread steps the `LLM`; each request reads its outputs from an
asyncio queue. Model steps are blocking compute, so they never run on the event loop; the thread owns the engine
and receives additions and aborts as commands, which keeps the engine single-threaded. A request the engine fails
(`LLM.step` isolates faults per request) gets a server_error; the other requests go on.
"""

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator

from lmforge.server.metrics import Metrics
from lmforge.server.protocol import OpenAIError

log = logging.getLogger("lmforge.server")


class AsyncEngine:
    def __init__(self, llm, max_pending: int = 256, metrics: Metrics | None = None):
        self.llm = llm
        self.max_pending = max_pending
        self.metrics = metrics or Metrics()
        self.commands: queue.Queue = queue.Queue()
        self.wake = threading.Event()
        self.streams: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}  # handle -> consumer
        self.handle_to_request: dict[int, int] = {}
        self.request_to_handle: dict[int, int] = {}
        self.handles = itertools.count()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="lmforge-engine", daemon=True)
        self.metrics.watch_engine(llm.stats)  # queue, KV blocks, preemptions, token totals

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        self.thread.join(timeout=10)

    @property
    def num_pending(self) -> int:
        return len(self.streams)

    async def generate(self, prompt_ids: list[int], params, images=None) -> AsyncIterator:
        """Yield the request's RequestOutputs as the engine produces them; abort it if the consumer goes away.
        `images`: the prompt's pixel_values (a LLaVA model), encoded by the engine thread when it adds the request."""
        if self.num_pending >= self.max_pending:
            raise OpenAIError(429, f"the server is at capacity ({self.max_pending} requests); retry later",
                              type_="rate_limit_error", code="rate_limit_exceeded")
        handle = next(self.handles)
        outputs: asyncio.Queue = asyncio.Queue()
        self.streams[handle] = (asyncio.get_running_loop(), outputs)
        self.commands.put(("add", handle, prompt_ids, params, images))
        self.wake.set()
        finished = False
        try:
            while True:
                out = await outputs.get()
                if isinstance(out, Exception):
                    raise out
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            self.streams.pop(handle, None)
            if not finished:
                self.commands.put(("abort", handle))
                self.wake.set()

    async def call(self, fn):
        """fn() run in the engine thread between steps (it owns the model: e.g. scoring a prompt); its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.commands.put(("call", fn, loop, future))
        self.wake.set()
        return await future

    # -- the engine thread -------------------------------------------------------------------------------------
    def _deliver(self, handle: int, item) -> None:
        consumer = self.streams.get(handle)
        if consumer is not None:
            loop, outputs = consumer
            loop.call_soon_threadsafe(outputs.put_nowait, item)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "call":
                _, fn, loop, future = command
                try:
                    outcome, value = future.set_result, fn()
                except Exception as err:  # noqa: BLE001 - handed to the caller
                    outcome, value = future.set_exception, err
                loop.call_soon_threadsafe(lambda f=future, o=outcome, v=value: f.done() or o(v))
            elif command[0] == "add":
                _, handle, prompt_ids, params, images = command
                if handle not in self.streams:  # the client left before we started
                    continue
                try:
                    request_id = self.llm.add_request(prompt_ids, params, images)
                except Exception as err:  # noqa: BLE001 - a bad request fails alone
                    self._deliver(handle, OpenAIError(400, str(err)))
                    continue
                self.handle_to_request[handle] = request_id
                self.request_to_handle[request_id] = handle
            else:
                request_id = self.handle_to_request.pop(command[1], None)
                if request_id is not None:
                    self.request_to_handle.pop(request_id, None)
                    self.llm.abort(request_id)
                    self.metrics.inc("aborted_requests_total", help="requests aborted (client disconnects)")

    def _loop(self) -> None:
        while not self.stopped:
            self._run_commands()
            if not self.llm.has_unfinished():
                self.wake.wait(timeout=0.5)
                self.wake.clear()
                continue
            try:
                start = time.perf_counter()
                outputs = self.llm.step()
                self.metrics.observe("step_seconds", time.perf_counter() - start, "duration of one engine step")
            except Exception as err:  # noqa: BLE001 - outside any one request (LLM.step isolates those): see below
                log.exception("engine step failed")
                self._fail_newest(err)
                continue
            for out in outputs:
                handle = self.request_to_handle.get(out.request_id)
                if handle is None:
                    continue
                if out.finished:
                    self.request_to_handle.pop(out.request_id, None)
                    self.handle_to_request.pop(handle, None)
                if out.error is not None:
                    self.metrics.inc("failed_requests_total", help="requests the engine failed (alone)")
                    out = OpenAIError(500, out.error, type_="server_error")
                self._deliver(handle, out)

    def _fail_newest(self, err: Exception) -> None:
        """A step failed outside per-request isolation (scheduling, cache bookkeeping): end the most recently added
        request, the likeliest cause since the engine ran without it, and retry. Each failure ends one request, so
        the loop always makes progress and requests that ran fine before the newcomer keep running."""
        if not self.llm.requests:
            return
        request_id = max(self.llm.requests)  # request ids increase with arrival
        try:
            self.llm.abort(request_id)
        except Exception:  # noqa: BLE001 - still drop it from the engine's table below
            log.exception("abort after a failed step failed")
            self.llm.requests.pop(request_id, None)
        handle = self.request_to_handle.pop(request_id, None)
        if handle is not None:
            self.handle_to_request.pop(handle, None)
            self.metrics.inc("failed_requests_total", help="requests the engine failed (alone)")
            self._deliver(handle, OpenAIError(500, f"engine error: {type(err).__name__}: {err}", type_="server_error"))
