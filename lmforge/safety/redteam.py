"""`lmforge redteam ENDPOINT`: send the probe set (probes.py) to any OpenAI-compatible chat endpoint and report
attack success rate by category and technique, and over-refusal on the benign look-alike set (garak's and
XSTest's measures, on lmforge's own probes). Greedy decoding, so a run is repeatable against the same server.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx

from lmforge.common.errors import LmforgeError
from lmforge.safety.probes import Probe, attack_probes, attack_succeeded, benign_probes, is_refusal


def _client(endpoint: str, api_key: str | None, timeout: float) -> httpx.Client:
    if not endpoint.startswith(("http://", "https://")):
        raise LmforgeError(f"ENDPOINT must be an http(s) URL such as http://127.0.0.1:8000/v1, got {endpoint!r}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=endpoint.rstrip("/"), headers=headers, timeout=timeout)


def served_model(client: httpx.Client) -> str:
    try:
        r = client.get("/models")
        r.raise_for_status()
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise LmforgeError(f"cannot list the models of {client.base_url} (pass --model): {err}") from None


def ask(client: httpx.Client, model: str, probe: Probe, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": probe.prompt}], "max_tokens": max_tokens,
            "temperature": 0}
    try:
        r = client.post("/chat/completions", json=body)
    except httpx.HTTPError as err:
        raise LmforgeError(f"cannot reach {client.base_url}: {err}") from None
    if r.status_code != 200:
        raise LmforgeError(f"{client.base_url} answered {r.status_code} to probe {probe.id}: {r.text[:200]}")
    choice = r.json()["choices"][0]
    return {"answer": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason")}


def _rate(rows: list[dict], key: str) -> dict:
    n, k = len(rows), sum(r[key] for r in rows)
    return {"probes": n, key: k, "rate": round(k / n, 4) if n else None}


def run_redteam(endpoint: str, model: str | None = None, api_key: str | None = None, max_tokens: int = 96,
                concurrency: int = 8, limit: int | None = None, timeout: float = 600.0, on_result=None) -> dict:
    """The report: attack success rate overall / by category / by technique, over-refusal, every answer."""
    attacks, benign = attack_probes(), benign_probes()
    if limit is not None:
        attacks, benign = attacks[:limit], benign[:limit]
    with _client(endpoint, api_key, timeout) as client:
        model = model or served_model(client)
        probes = attacks + benign
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            answers = list(pool.map(lambda p: ask(client, model, p, max_tokens), probes))
    rows = []
    for probe, out in zip(probes, answers, strict=True):
        row = {"id": probe.id, "category": probe.category, "technique": probe.technique, "prompt": probe.prompt,
               **out, "refused": is_refusal(out["answer"], out["finish_reason"])}
        if probe.category != "benign":
            row["success"] = attack_succeeded(probe, out["answer"], out["finish_reason"])
        rows.append(row)
        if on_result:
            on_result(row)
    attack_rows = [r for r in rows if r["category"] != "benign"]
    by = defaultdict(list)
    for r in attack_rows:
        by["category", r["category"]].append(r)
        by["technique", r["technique"]].append(r)
    return {
        "endpoint": endpoint, "model": model, "max_tokens": max_tokens,
        "attack_success_rate": _rate(attack_rows, "success")["rate"],
        "over_refusal": _rate([r for r in rows if r["category"] == "benign"], "refused")["rate"],
        "by_category": {name: _rate(v, "success") for (kind, name), v in sorted(by.items()) if kind == "category"},
        "by_technique": {name: _rate(v, "success") for (kind, name), v in sorted(by.items()) if kind == "technique"},
        "results": rows,
    }
