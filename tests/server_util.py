"""Run the lmforge HTTP server in a background thread of the test process, on a free 127.0.0.1 port."""

import socket
import threading
import time
from contextlib import contextmanager

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
