"""Run the lmforge HTTP server in a background thread of the test process, on a free 127.0.0.1 port."""

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.images import ImageEncoder
from lmforge.server.app import create_app
from lmforge.server.async_engine import AsyncEngine
from lmforge.server.served import ServedModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(lm, name="smollm2-135m", api_key=None, config: EngineConfig | None = None, max_pending=256,
                default_max_tokens=64, served_class=ServedModel, served_options=None, **app_options):
    """Yields (base url, the LLM); `app_options` go to create_app (allowed_hosts, cors_origins, max_body_bytes,
    embedder); `served_class(..., **served_options)` prepares the requests (e.g. RagServedModel)."""
    vision = ImageEncoder.from_lm(lm)  # a LLaVA model takes images; None for a text model
    llm = LLM(lm.model, lm.tokenizer, config or EngineConfig(num_blocks=512), vision=vision)
    served_options = {**({"vision": vision} if vision is not None else {}), **(served_options or {})}
    served = served_class(name, lm.tokenizer, lm.stop_token_ids(), lm.config.max_seq_len,
                          default_max_tokens=default_max_tokens, vocab_size=lm.config.vocab_size, **served_options)
    app = create_app(AsyncEngine(llm, max_pending=max_pending), served, api_key=api_key, **app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", llm
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_subprocess(*args: str, timeout: float = 300, cwd=None):
    """`python -m lmforge serve *args --port P` in a child process; yields P once /health answers 200 (fails with the
    server's stderr if it exits first or `timeout` passes), and stops the server after the block."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ}, cwd=cwd)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"serve {' '.join(args)} did not come up: {proc.stderr.read()[-1500:]}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
