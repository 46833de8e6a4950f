"""A markdown report of a run (report.md in the run directory): summary figures against the unigram baseline,
the plots, the last validation points and the latest sample generations.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.train.metrics import read_metrics
from lmforge.train.plots import PLOTS, write_plots


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        raise LmforgeError(f"{run_dir} holds no metrics.jsonl records: is it a pretraining run directory?")
    write_plots(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    lines = [f"# Pretraining report: {run_dir.name}", ""]
    rows = [("status", summary.get("status", "unknown")), ("steps", train[-1]["step"] if train else 0),
            ("tokens", f"{train[-1]['tokens']:,}" if train else 0),
            ("train time", f"{train[-1]['elapsed_s']:.0f} s" if train else "-")]
    if "params" in summary:
        rows.append(("parameters", f"{summary['params'] / 1e6:.2f}M ({summary.get('preset')})"))
    if val:
        rows.append(("final validation loss", f"{val[-1]['val_loss']:.4f} nats/token "
                                               f"(perplexity {val[-1]['val_ppl']:.2f})"))
    if summary.get("unigram_entropy") is not None:
        rows.append(("unigram-entropy baseline", f"{summary['unigram_entropy']:.4f} nats/token"))
    if train:
        tail = train[-min(len(train), 10):]
        rows.append(("throughput (last logs)", f"{sum(r['tokens_per_s'] for r in tail) / len(tail):,.0f} tokens/s"))
        rows.append(("MFU (last logs)", f"{sum(r['mfu'] for r in tail) / len(tail):.1%}"))
        rows.append(("skipped non-finite steps", sum(bool(r.get("skipped")) for r in train)))
    lines += ["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
    lines += [f"![{name[:-4]}]({name})" for name in PLOTS if (run_dir / name).is_file()] + [""]
    if val:
        lines += ["## Validation", "", "| step | loss | perplexity |", "| --- | --- | --- |"]
        lines += [f"| {r['step']} | {r['val_loss']:.4f} | {r['val_ppl']:.2f} |" for r in val[-10:]] + [""]
    samples_path = run_dir / "samples.jsonl"
    if samples_path.is_file():
        samples = [json.loads(line) for line in samples_path.read_text().splitlines() if line.strip()]
        last = max(s["step"] for s in samples) if samples else None
        lines += [f"## Samples at step {last} (greedy)", ""]
        for s in (s for s in samples if s["step"] == last):
            lines += ["```", s["prompt"] + s["text"], "```", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out
