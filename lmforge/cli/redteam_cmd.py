"""`lmforge redteam ENDPOINT`: attack success rate by category and over-refusal of an OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def redteam(
    endpoint: str = typer.Argument(..., help="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1.",
                                   show_default=False),
    model: str = typer.Option(None, "--model", help="Model id to ask (default: the first of GET /models)."),
    api_key: str = typer.Option(None, "--api-key", envvar="LMFORGE_API_KEY", help="Bearer key (env LMFORGE_API_KEY)."),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1, help="Answer length per probe (greedy)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256, help="Requests in flight."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N attack and N benign probes."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the full report (every answer) as JSON here."),
) -> None:
    """Red-team a chat endpoint with lmforge's probe set (jailbreak templates x harmful intents, base64, Chinese,
    role-play, prompt injection): attack success rate by category and technique, and over-refusal on benign
    look-alike prompts."""
    from lmforge.safety.redteam import run_redteam

    report = run_redteam(endpoint, model, api_key, max_tokens, concurrency, limit)
    print(f"model {report['model']} at {endpoint}")
    print(f"attack success rate: {report['attack_success_rate']:.1%}   over-refusal (benign): "
          f"{report['over_refusal']:.1%}")
    for group in ("by_category", "by_technique"):
        print(f"{group.replace('_', ' ')}: " + ", ".join(f"{name} {v['rate']:.0%} ({v['success']}/{v['probes']})"
                                                         for name, v in report[group].items()))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"report: {out}")
