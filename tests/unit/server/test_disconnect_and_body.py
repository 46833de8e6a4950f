"""Issue 20 item 3: work never outlives its client. A non-streaming client that leaves has its requests aborted;
parsing, templating and tokenising a large body leave /health responsive; a chunked upload without Content-Length
is refused (413) as soon as it passes the limit, not after it was read whole."""

import socket
import threading
import time
from urllib.parse import urlparse

import httpx

from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, chat, post, slow_steps


def test_non_streaming_clients_that_leave_are_aborted(lm):
    with live_server(lm, name=MODEL) as (url, llm):
        slow_steps(llm, 0.02)  # 200 tokens take >= 4 s: well past the clients' 0.5 s
        generated = []
        step = llm.step
        llm.step = lambda: [generated.append(len(o.new_token_ids)) or o for o in step()]

        def leave_early(i):
            body = {"model": MODEL, "prompt": "the cat", "max_tokens": 200, "n": 8, "temperature": 1.0, "seed": i}
            try:
                post(url, "/v1/completions", body, timeout=0.5)
            except httpx.ReadTimeout:
                return
            raise AssertionError("the request finished before the client left")

        threads = [threading.Thread(target=leave_early, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        left_at = sum(generated)
        deadline = time.time() + 3
        while llm.has_unfinished() and time.time() < deadline:
            time.sleep(0.05)
        assert not llm.has_unfinished()  # aborted within the poll interval, not after 200 tokens each
        assert sum(generated) - left_at < 4 * 8 * 40  # tokens generated after the clients left (was 4 x 8 x 200)
        assert llm.block_manager.num_free == llm.block_manager.num_blocks
        metrics = httpx.get(url + "/metrics").text
        assert "lmforge_disconnected_requests_total 4.0" in metrics


def test_health_stays_responsive_while_a_large_body_is_tokenised(lm):
    text = "the cat sat on the mat. " * 60000  # 1.4 MB: about 1.5 s of tokenising on this tokenizer
    with live_server(lm, name=MODEL) as (url, _):
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", post(url, "/v1/chat/completions",
                                                                             chat(text, max_tokens=2))))
        answered = []  # when each /health answer arrived: the largest gap is the longest stall (GIL included)
        with httpx.Client(timeout=30) as client:
            client.get(url + "/health")
            answered.append(time.perf_counter())
            worker.start()
            while worker.is_alive():
                assert client.get(url + "/health").status_code == 200
                answered.append(time.perf_counter())
                time.sleep(0.01)
        busy = answered[-1] - answered[0]
        stall = max(b - a for a, b in zip(answered, answered[1:], strict=False))
        r = result["r"]
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert busy > 0.5, busy
        # was: one stall as long as the whole request. Half of it: the server, the client and the worker share one
        # GIL in this process, and on a loaded machine (0.84 s of 2.04 s seen under a full suite) a few gaps grow
        assert stall < max(0.3, busy / 2), (stall, busy)


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(lm):
    limit = 64 * 1024
    with live_server(lm, name=MODEL, max_body_bytes=limit) as (url, _):
        parts = urlparse(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 8192
            for _ in range(limit // len(chunk) + 2):  # just past the limit, and never the final empty chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            response = sock.recv(65536)  # the original server waited here for the rest of the body
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert httpx.get(url + "/health").status_code == 200
