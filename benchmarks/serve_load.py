"""Load test: start `lmforge serve` on 127.0.0.1, run N concurrent streaming chat clients (a share of which
disconnect mid-stream), malformed requests, hostile clients (parsable requests with invalid values: out-of-vocab
logit_bias, negative / huge numbers, wrong types) interleaved with greedy "checked" streams whose text must equal
what each gets alone, then read /metrics. Prints one JSON line: 5xx count, leaked KV blocks, p50/p95 time to first
token and inter-token latency, hostile statuses, checked streams identical to their solo run.
Usage: python benchmarks/serve_load.py [--clients 64] [--hostile 16] [--checked 6]
"""

import argparse
import asyncio
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

import httpx

MALFORMED = [b"{bad json", b"{}", b'{"model": "m", "messages": []}', b'{"model": "nope", "messages": [{"role": "user",'
             b' "content": "hi"}]}', b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 2}',
             b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}']


HOSTILE = [  # (path, body fields or raw bytes, headers): parsable, each invalid in one way; 4xx expected
    ("chat", {"logit_bias": {"49152": 1}}), ("chat", {"logit_bias": {"-1": 5}}), ("chat", {"logit_bias": {"5": 1e6}}),
    ("chat", {"logit_bias": {"5": "1"}}), ("chat", {"logit_bias": {"99999999999999999999": 1}}),
    ("chat", {"max_tokens": -5}), ("chat", {"max_tokens": 10**12}), ("chat", {"max_tokens": "5"}),
    ("chat", {"max_tokens": True}), ("chat", {"temperature": -1}), ("chat", {"temperature": "hot"}),
    ("chat", {"temperature": 1e308}), ("chat", {"top_p": 0}), ("chat", {"top_k": -5}), ("chat", {"min_p": 2}),
    ("chat", {"repetition_penalty": 0}), ("chat", {"n": 100}), ("chat", {"n": "2"}), ("chat", {"seed": -1}),
    ("chat", {"seed": 2**70}), ("chat", {"stop": 7}), ("chat", {"stop": [1, 2]}), ("chat", {"stream": "yes"}),
    ("chat", {"presence_penalty": 1e9}), ("chat", {"messages": [{"role": "user", "content": "a\ud800"}]}),
    ("chat", {"messages": [{"role": "user", "content": "word " * 12000}]}),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
    ("completion", {"prompt": [10**9]}), ("completion", {"prompt": [-1, 5]}), ("completion", {"prompt": 42}),
    ("completion", {"prompt": "hi", "logprobs": 50}), ("completion", {"prompt": "hi", "echo": "yes"}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 4) if values else None


async def client(http, url, i, args, stats):
    rng = random.Random(i)
    disconnect = rng.random() < args.disconnect_share
    body = {"model": "m", "stream": True, "max_tokens": rng.randint(8, args.max_tokens), "temperature": 0.7,
            "seed": i, "messages": [{"role": "user", "content": f"Tell me a short fact number {i} about the sea."}]}
    start = time.perf_counter()
    last, n = None, 0
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        stats["status"].append(r.status_code)
        if r.status_code != 200:
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if "error" in chunk:
                stats["stream_errors"] += 1
                return
            if not chunk["choices"] or not chunk["choices"][0]["delta"].get("content"):
                continue
            if last is None:
                stats["ttft"].append(now - start)
            else:
                stats["itl"].append(now - last)
            last, n = now, n + 1
            if disconnect and n >= 3:
                stats["disconnected"] += 1
                return  # leaving the `async with` closes the connection mid-stream
    stats["completed"] += 1


def checked_body(i, args) -> dict:
    return {"model": "m", "stream": True, "max_tokens": args.checked_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": f"Write a sentence about the number {i + 1}."}]}


async def stream_text(http, url, body, stats) -> str | None:
    """The streamed text of one request; None if it did not complete (non-200 or an error event)."""
    parts = []
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        stats["status"].append(r.status_code)
        if r.status_code != 200:
            return None
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return None
                if chunk["choices"]:
                    parts.append(chunk["choices"][0]["delta"].get("content") or "")
    return "".join(parts)


async def hostile(http, url, i, args, stats, done: asyncio.Event):
    """Send invalid requests, one after another, until the checked streams are done (at least `hostile_min`)."""
    rng, sent = random.Random(1000 + i), 0
    while sent < args.hostile_min or not done.is_set():
        kind, fields = rng.choice(HOSTILE)
        base = {"model": "m", "max_tokens": 4} | ({"messages": [{"role": "user", "content": "hi"}]} if kind == "chat"
                                                  else {"prompt": "hi"})
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        try:  # json.dumps writes an unpaired surrogate as the escape "\ud800", as a hostile client would
            r = await http.post(f"{url}{path}", content=json.dumps(base | fields).encode(),
                                headers={"Content-Type": "application/json"})
            status = r.status_code
        except httpx.HTTPError as err:  # no HTTP status: the client's own failure, named, never counted as 4xx/5xx
            stats["hostile_client_errors"].append(type(err).__name__)
            status = None
        if status is not None:
            stats["hostile"].append(status)
        sent += 1
        await asyncio.sleep(rng.random() * 0.05)


async def run(url, args):
    stats = {"status": [], "ttft": [], "itl": [], "disconnected": 0, "hostile": [], "hostile_client_errors": [],
             "completed": 0, "stream_errors": 0}
    limits = httpx.Limits(max_connections=args.clients + 16)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:
        bad = [http.post(f"{url}/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
               for raw in MALFORMED]
        alone = [await stream_text(http, url, checked_body(i, args), {"status": []}) for i in range(args.checked)]
        done = asyncio.Event()

        async def checked_streams():
            try:
                return await asyncio.gather(*[stream_text(http, url, checked_body(i, args), stats)
                                              for i in range(args.checked)])
            finally:
                done.set()

        jobs = [client(http, url, i, args, stats) for i in range(args.clients)]
        hostiles = [hostile(http, url, i, args, stats, done) for i in range(args.hostile)]
        checked, *results = await asyncio.gather(checked_streams(), *bad, *jobs, *hostiles, return_exceptions=True)
        stats["checked_identical"] = (sum(a is not None and a == b for a, b in zip(alone, checked, strict=True))
                                      if isinstance(checked, list) else 0)
        for r in results[:len(bad)]:
            stats["status"].append(r.status_code if isinstance(r, httpx.Response) else 599)
        stats["errors"] = [repr(r) for r in results if isinstance(r, Exception)]
        await asyncio.sleep(1.0)  # let the engine process the aborts
        metrics = (await http.get(f"{url}/metrics")).text
    return stats, metrics


def gauge(metrics: str, name: str) -> float | None:
    match = re.search(rf"^lmforge_{name} ([0-9.e+-]+)$", metrics, re.M)
    return float(match.group(1)) if match else None


def wait_until_up(url, server, log, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server did not start: {log.read()[-2000:]}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--disconnect-share", type=float, default=0.2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--hostile", type=int, default=16, help="clients sending invalid requests throughout")
    parser.add_argument("--hostile-min", type=int, default=8, help="requests each hostile client sends at least")
    parser.add_argument("--checked", type=int, default=6, help="greedy streams compared with their solo run")
    parser.add_argument("--checked-tokens", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:  # a pipe could fill up and block the server
        server = subprocess.Popen([sys.executable, "-c", "from lmforge.cli.main import main; main()", "serve",
                                   args.model, "--port", str(port), "--served-model-name", "m"], stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, server, log)
            start = time.perf_counter()
            stats, metrics = asyncio.run(run(url, args))
            elapsed = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.seek(0)
            server_log = log.read()
    print(json.dumps({
        "benchmark": "serve_load", "clients": args.clients, "disconnected": stats["disconnected"],
        "malformed": len(MALFORMED), "status_5xx": sum(s >= 500 for s in stats["status"]),
        "status_4xx": sum(400 <= s < 500 for s in stats["status"]), "client_errors": stats["errors"][:5],
        "leaked_kv_blocks": gauge(metrics, "kv_blocks_in_use"), "wall_s": round(elapsed, 1),
        "ttft_p50_s": percentile(stats["ttft"], 0.5), "ttft_p95_s": percentile(stats["ttft"], 0.95),
        "itl_p50_s": percentile(stats["itl"], 0.5), "itl_p95_s": percentile(stats["itl"], 0.95),
        "preemptions": gauge(metrics, "preemptions_total"), "server_errors": server_log.count("Traceback"),
        "hostile_clients": args.hostile, "hostile_requests": len(stats["hostile"]),
        "hostile_4xx": sum(400 <= s < 500 for s in stats["hostile"]),
        "hostile_5xx": sum(s >= 500 for s in stats["hostile"]),
        "hostile_other": sum(s < 400 for s in stats["hostile"]),
        "hostile_client_errors": sorted(stats["hostile_client_errors"]),
        "checked_streams": args.checked, "checked_identical_to_alone": stats["checked_identical"],
        "completed_streams": stats["completed"], "stream_errors": stats["stream_errors"],
    }))


if __name__ == "__main__":
    main()
