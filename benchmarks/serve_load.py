"""Load test: start `lmforge serve` on 127.0.0.1, run N concurrent streaming chat clients (a share of which
disconnect mid-stream) plus malformed requests, then read /metrics. Prints one JSON line: 5xx count, leaked KV
blocks, p50/p95 time to first token and inter-token latency. Usage: python benchmarks/serve_load.py [--clients 64]
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


async def run(url, args):
    stats = {"status": [], "ttft": [], "itl": [], "disconnected": 0}
    limits = httpx.Limits(max_connections=args.clients + 16)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:
        bad = [http.post(f"{url}/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
               for raw in MALFORMED]
        jobs = [client(http, url, i, args, stats) for i in range(args.clients)]
        results = await asyncio.gather(*bad, *jobs, return_exceptions=True)
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
    }))


if __name__ == "__main__":
    main()
