"""`lmforge judge`: an LLM as judge (MT-Bench prompts) on labelled (question, good, bad) pairs: pairwise accuracy with
position swap, swap consistency, position bias, and single-answer 1-10 grading."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError

MODES = ("pairwise", "single", "both")


def _read_pairs(path: Path | None) -> list[dict]:
    from lmforge.eval.judge import validate_pairs
    from lmforge.eval.judge_data import JUDGE_PAIRS

    if path is None:
        return JUDGE_PAIRS
    if not path.is_file():
        raise LmforgeError(f"--pairs file {str(path)!r} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LmforgeError(f"{path}:{number} is not valid JSON ({err.msg})") from None
    return validate_pairs(rows, str(path))


def judge(
    model: str = typer.Argument("smollm2-135m", help="Judge model: an lmforge / Hugging Face model directory, a GGUF "
                                "file or the embedded smollm2-135m (ignored with --endpoint)."),
    endpoint: str = typer.Option(None, "--endpoint", help="Judge with an OpenAI-compatible API instead, e.g. "
                                 "http://127.0.0.1:8000/v1."),
    api_key: str = typer.Option(None, "--api-key", envvar="LMFORGE_API_KEY", help="Bearer key for --endpoint "
                                "(env LMFORGE_API_KEY)."),
    judge_model: str = typer.Option(None, "--judge-model", help="Model id to ask at --endpoint (default: the first "
                                    "of GET /models)."),
    mode: str = typer.Option("both", "--mode", help=f"What to run: {', '.join(MODES)}."),
    pairs: Path = typer.Option(None, "--pairs", help="Labelled JSONL, one {\"question\", \"good\", \"bad\"} per line "
                               "(default: lmforge's built-in set of 24)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only the first N pairs."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Judgment length (greedy)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the report (every judgment) as JSON here."),
) -> None:
    """Measure a judge on labelled pairs. Pairwise: each pair is asked in both orders, and a verdict counts only when
    both orders agree (else a tie, worth half); consistency is the share of agreeing pairs, position bias the share of
    "A" minus the share of "B" verdicts (+1: always the first answer). Single: each answer graded 1-10 alone."""
    from lmforge.eval.judge import pairwise, single
    from lmforge.eval.judge_backends import endpoint_judge, engine_judge

    if mode not in MODES:
        raise LmforgeError(f"--mode {mode!r} is not allowed; use one of {', '.join(MODES)}")
    rows = _read_pairs(pairs)[:limit]
    if endpoint is not None:
        ask = endpoint_judge(endpoint, api_key, judge_model, max_tokens)
        name = f"{judge_model or 'model'} at {endpoint}"
    else:
        from lmforge.formats.loader import load
        from lmforge.model.inference import prepare_for_inference

        lm = load(model)
        prepare_for_inference(lm.model)
        ask, name = engine_judge(lm, max_tokens), model
    report: dict = {"judge": name, "pairs": len(rows)}
    print(f"judge {name} on {len(rows)} labelled pairs")
    if mode in ("pairwise", "both"):
        r = report["pairwise"] = pairwise(ask, rows)
        print(f"pairwise (position swap): accuracy {r['accuracy']:.1%} (ties half; strict {r['strict_accuracy']:.1%}), "
              f"swap consistency {r['consistency']:.1%}, position bias {r['position_bias']:+.2f}, "
              f"one-order accuracy {r['single_order_accuracy']:.1%}, verdicts parsed {r['parsed']:.1%}")
    if mode in ("single", "both"):
        r = report["single"] = single(ask, rows)

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        print(f"single grading (1-10): good answers {fmt(r['mean_good'])}, bad answers {fmt(r['mean_bad'])}, "
              f"pairs ranked right {r['accuracy']:.1%}, scores parsed {r['parsed']:.1%}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"report: {out}")
