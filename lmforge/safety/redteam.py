"""`lmforge redteam ENDPOINT`: send the probe set (probes.py) to any OpenAI-compatible chat endpoint and report
attack success rate by category and technique, and over-refusal on the benign look-alike set (garak's and
XSTest's measures, on lmforge's own probes). Greedy decoding, so a run is repeatable against the same server.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from lmforge.common.chat_endpoint import ChatEndpoint
from lmforge.safety.probe_split import helpful_probes, split_probes
from lmforge.safety.probes import Probe, attack_succeeded, is_refusal


def ask(client: ChatEndpoint, model: str, probe: Probe, max_tokens: int) -> dict:
    return client.chat(model, [{"role": "user", "content": probe.prompt}], max_tokens, f" to probe {probe.id}")


def _rate(rows: list[dict], key: str) -> dict:
    n, k = len(rows), sum(r[key] for r in rows)
    return {"probes": n, key: k, "rate": round(k / n, 4) if n else None}


def run_redteam(endpoint: str, model: str | None = None, api_key: str | None = None, max_tokens: int = 96,
                concurrency: int = 8, limit: int | None = None, timeout: float = 600.0, on_result=None,
                split: str = "all", helpful: bool = False) -> dict:
    """The report: attack success rate overall / by category / by technique, over-refusal, every answer. `split`
    picks the probes (probe_split.py: all, train, heldout); `helpful` adds the harmless requests in jailbreak
    templates (their refusal rate is reported apart, as helpful_refusal)."""
    attacks, benign = split_probes(split)
    if limit is not None:
        attacks, benign = attacks[:limit], benign[:limit]
    if helpful:
        benign += helpful_probes()[:limit]
    with ChatEndpoint(endpoint, api_key, timeout) as client:
        model = model or client.first_model()
        probes = attacks + benign
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            answers = list(pool.map(lambda p: ask(client, model, p, max_tokens), probes))
    rows = []
    for probe, out in zip(probes, answers, strict=True):
        row = {"id": probe.id, "category": probe.category, "technique": probe.technique, "prompt": probe.prompt,
               **out, "refused": is_refusal(out["answer"], out["finish_reason"])}
        if probe.category not in ("benign", "helpful"):
            row["success"] = attack_succeeded(probe, out["answer"], out["finish_reason"])
        rows.append(row)
        if on_result:
            on_result(row)
    attack_rows = [r for r in rows if r["category"] not in ("benign", "helpful")]
    by = defaultdict(list)
    for r in attack_rows:
        by["category", r["category"]].append(r)
        by["technique", r["technique"]].append(r)
    helpful_rows = [r for r in rows if r["category"] == "helpful"]
    return {
        "endpoint": endpoint, "model": model, "max_tokens": max_tokens, "split": split,
        "attack_success_rate": _rate(attack_rows, "success")["rate"],
        "over_refusal": _rate([r for r in rows if r["category"] == "benign"], "refused")["rate"],
        **({"helpful_refusal": _rate(helpful_rows, "refused")["rate"]} if helpful_rows else {}),
        "by_category": {name: _rate(v, "success") for (kind, name), v in sorted(by.items()) if kind == "category"},
        "by_technique": {name: _rate(v, "success") for (kind, name), v in sorted(by.items()) if kind == "technique"},
        "results": rows,
    }
