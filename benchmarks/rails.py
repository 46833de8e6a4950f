"""Rail latency: what `serve --safety` adds to time to first token and per-token time, at N concurrent streams.

The embedded SmolLM2 is served in-process twice per round — without rails, then with a policy (lmforge's default,
or --policy) — on one loaded model, rounds alternating so that machine noise hits both alike. Each round sends N
concurrent streaming chat requests (greedy, benign prompts, fixed length) and measures at the client: TTFT (request
to first content chunk) and per-token time ((last chunk - first chunk) / (completion tokens - 1)). A warm-up round
is not counted. On a busy machine the end-to-end ratios are noisy, so the rails' own cost is also measured exactly:
the answers streamed without rails are replayed through the output rail (CPU microseconds per token, and how many
tokens the hold-back delays the first visible text), giving the share of an engine step the rails take.
Prints one JSON line: medians per mode, the ratios (target: <= 1.15) and the replay figures.
Usage: python benchmarks/rails.py [--streams 32] [--tokens 32] [--rounds 2] [--policy FILE]
"""

import argparse
import asyncio
import json
import socket
import statistics
import sys
import threading
import time

import httpx
import uvicorn

TOPICS = ["the sea", "a good breakfast", "learning Python", "the moon", "trains", "autumn", "chess", "bread",
          "rivers", "the piano", "bees", "winter sports", "maps", "tea", "volcanoes", "libraries"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


async def one_stream(client, url, i, tokens):
    body = {"model": "m", "messages": [{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "logit_bias": {"0": -100, "2": -100}}  # no end of text: `tokens` tokens each
    start, first, last, n, finish, deltas = time.perf_counter(), None, None, 0, None, []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                if chunk["choices"][0]["delta"].get("content"):
                    deltas.append(chunk["choices"][0]["delta"]["content"])
                    last = time.perf_counter()
                    first = first or last
                finish = chunk["choices"][0]["finish_reason"] or finish
            elif chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    return first - start, (last - first) / max(n - 1, 1), finish, deltas


async def round_trip(url, streams, tokens):
    async with httpx.AsyncClient(timeout=600) as client:
        return await asyncio.gather(*[one_stream(client, url, i, tokens) for i in range(streams)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--policy", default=None)
    args = parser.parse_args()

    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.formats.loader import load
    from lmforge.model.inference import prepare_for_inference
    from lmforge.safety.rails import Rails
    from lmforge.server.app import create_app
    from lmforge.server.async_engine import AsyncEngine
    from lmforge.server.served import ServedModel

    lm = load("smollm2-135m")
    prepare_for_inference(lm.model)
    rails = Rails.from_file(args.policy) if args.policy else Rails()
    results = {"off": [], "on": []}
    finishes = {"off": set(), "on": set()}
    schedule = [("warmup", "off")] + [(r, mode) for r in range(args.rounds)
                                      for mode in (("off", "on") if r % 2 == 0 else ("on", "off"))]
    for r, mode in schedule:
        llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=1024, max_num_seqs=args.streams))
        served = ServedModel("m", lm.tokenizer, lm.stop_token_ids(), lm.config.max_seq_len)
        app = create_app(AsyncEngine(llm), served, rails=rails if mode == "on" else None)
        server, thread, url = serve(app)
        try:
            out = asyncio.run(round_trip(url, args.streams, args.tokens))
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        if r == "warmup":
            continue
        results[mode] += out
        finishes[mode] |= {o[2] for o in out}
        print(f"{mode}: ttft {statistics.median(o[0] for o in out):.3f}s, per-token "
              f"{statistics.median(o[1] for o in out) * 1000:.1f}ms", file=sys.stderr)
    replay = replay_rails(rails, [o[3] for o in results["off"]])
    med = {mode: {"ttft_s": round(statistics.median(o[0] for o in rows), 4),
                  "per_token_ms": round(statistics.median(o[1] for o in rows) * 1000, 2)}
           for mode, rows in results.items()}
    print(json.dumps({
        "benchmark": "rails", "streams": args.streams, "tokens": args.tokens, "rounds": args.rounds,
        "policy": args.policy or "default", "without_rails": med["off"], "with_rails": med["on"],
        "ttft_ratio": round(med["on"]["ttft_s"] / med["off"]["ttft_s"], 3),
        "per_token_ratio": round(med["on"]["per_token_ms"] / med["off"]["per_token_ms"], 3),
        "finish_reasons": {k: sorted(str(f) for f in v) for k, v in finishes.items()},
        **replay,
        "rail_share_of_per_token": round(replay["rail_us_per_token"] * args.streams / 1000 / med["off"]["per_token_ms"],
                                         5),
    }))


def replay_rails(rails, streams: list[list[str]]) -> dict:
    """The output rail's CPU time per token, and the tokens it holds back before the first visible text."""
    tokens, delays, start = 0, [], time.perf_counter()
    for deltas in streams:
        rail, first = rails.output_rail(), None
        for i, delta in enumerate(deltas):
            if rail.feed(delta) and first is None:
                first = i
        rail.finish()
        tokens += len(deltas)
        delays.append(first if first is not None else len(deltas))
    elapsed = time.perf_counter() - start
    return {"rail_us_per_token": round(elapsed / max(tokens, 1) * 1e6, 2),
            "first_text_delay_tokens_mean": round(statistics.mean(delays), 3)}


if __name__ == "__main__":
    main()
