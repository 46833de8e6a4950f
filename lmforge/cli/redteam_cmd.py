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
    split: str = typer.Option("all", "--split", help="Probes to send: all, train or heldout (held-out harmful "
                              "intents and every other benign prompt, kept out of --dpo-pairs)."),
    dpo_pairs: Path = typer.Option(None, "--dpo-pairs", help="With --split train: also send harmless requests in the "
                                   "jailbreak templates, and write DPO safety pairs (refusal > compliance on attacks, "
                                   "the model's answer > refusal on safe prompts) as JSONL here, for lmforge dpo "
                                   "--data."),
) -> None:
    """Red-team a chat endpoint with lmforge's probe set (jailbreak templates x harmful intents, base64, Chinese,
    role-play, prompt injection): attack success rate by category and technique, and over-refusal on benign
    look-alike prompts. --split train / heldout and --dpo-pairs: the safety DPO recipe (docs/safety.md)."""
    from lmforge.common.errors import LmforgeError
    from lmforge.safety.dpo_pairs import build_pairs, write_pairs
    from lmforge.safety.probe_split import SPLITS
    from lmforge.safety.redteam import run_redteam

    if split not in SPLITS:
        raise LmforgeError(f"--split {split!r} is not allowed; use one of {', '.join(SPLITS)}")
    if dpo_pairs is not None and split != "train":
        raise LmforgeError(f"--dpo-pairs builds pairs from the train split only; add --split train (got {split!r})")
    report = run_redteam(endpoint, model, api_key, max_tokens, concurrency, limit, split=split,
                         helpful=dpo_pairs is not None)
    print(f"model {report['model']} at {endpoint}" + (f" ({split} split)" if split != "all" else ""))
    print(f"attack success rate: {report['attack_success_rate']:.1%}   over-refusal (benign): "
          f"{report['over_refusal']:.1%}" + (f"   refusal of harmless requests in jailbreak templates: "
                                             f"{report['helpful_refusal']:.1%}" if "helpful_refusal" in report else ""))
    for group in ("by_category", "by_technique"):
        print(f"{group.replace('_', ' ')}: " + ", ".join(f"{name} {v['rate']:.0%} ({v['success']}/{v['probes']})"
                                                         for name, v in report[group].items()))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"report: {out}")
    if dpo_pairs is not None:
        pairs = build_pairs(report["results"])
        write_pairs(pairs, dpo_pairs)
        kinds = [p["kind"] for p in pairs]
        print(f"DPO pairs: {dpo_pairs} ({kinds.count('refuse')} refusal > compliance, {kinds.count('help')} "
              f"answer > refusal)")
