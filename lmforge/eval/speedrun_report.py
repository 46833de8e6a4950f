"""The report card of `lmforge speedrun` (nanochat's report.md): a table of stages x scores on the same task set,
the checks that each stage improved what it should, the time of each stage, and two PNGs — the scores per stage
(report_card.png) and the training curves of pretraining, SFT and DPO (loss_curves.png).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lmforge.eval.speedrun_config import stage_dir
from lmforge.train.metrics import read_metrics

CARD_PNG, CURVES_PNG = "report_card.png", "loss_curves.png"
ROWS = ("baseline", "pretrain", "sft", "dpo")
ROW_NAMES = {"baseline": "unigram baseline", "pretrain": "pretrain", "sft": "SFT", "dpo": "DPO"}


def card_columns(scores: dict) -> list[tuple[str, str, bool]]:
    """(key, column title, higher is better) of every score in the card."""
    cols = [("corpus.loss", "held-out loss (nats/token)", False), ("corpus.bpb", "held-out bits/byte", False),
            ("instruct.exact_match", "instruct exact match", True), ("preference.accuracy", "preference accuracy",
                                                                       True)]
    tasks = sorted({name for s in scores.values() for name in s.get("tasks", {})})
    return cols + [(f"tasks.{name}", name, True) for name in tasks]


def card_value(row: dict | None, key: str) -> float | None:
    group, name = key.split(".", 1)
    value = (row or {}).get(group, {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def card_rows(stages: dict) -> dict[str, dict]:
    """The rows of the card: the unigram baseline (tokenizer stage) and each model stage's scores."""
    scores = dict(stages["eval"]["scores"])
    return {"baseline": {"corpus": stages["tokenizer"]["baseline"]}, **scores}


def checks(rows: dict) -> list[tuple[str, bool | None, str]]:
    """(claim, holds, figures) of what each stage must improve."""
    bpb = {r: card_value(rows.get(r), "corpus.bpb") for r in ROWS}
    em = {r: card_value(rows.get(r), "instruct.exact_match") for r in ROWS}
    pref = {r: card_value(rows.get(r), "preference.accuracy") for r in ROWS}
    return [("pretraining beats the unigram baseline (held-out bits/byte)", bpb["pretrain"] < bpb["baseline"],
             f"{bpb['pretrain']:.3f} vs {bpb['baseline']:.3f}"),
            ("SFT beats pretraining on the instruction task (exact match)", em["sft"] > em["pretrain"],
             f"{em['pretrain']:.2f} -> {em['sft']:.2f}"),
            ("DPO changes preference accuracy on held-out pairs", pref["dpo"] != pref["sft"],
             f"{pref['sft']:.2f} -> {pref['dpo']:.2f} ({pref['dpo'] - pref['sft']:+.2f})")]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_report(out: Path, stages: dict, plan: dict | None, sizes: dict) -> tuple[Path, list[Path]]:
    rows = card_rows(stages)
    cols = card_columns(rows)
    pngs = [write_card_png(out / CARD_PNG, rows, cols), write_curves_png(out / CURVES_PNG, out, stages)]
    total = sum(s["seconds"] for s in stages.values() if s)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    limit = f", the first {sizes['task_limit']} items" if sizes["task_limit"] else ""
    lines = ["# lmforge speedrun: report card", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}; recipe `{plan['recipe'] if plan else '?'}`, seed "
             f"{plan['seed'] if plan else '?'}; {os.cpu_count()} CPUs, load average {load:.1f} at the end; "
             f"stages took {total / 60:.1f} minutes in all.", "",
             "The same task set on every stage's model, all on held-out data: loss and bits per byte on the held-out "
             "split of the embedded corpus (the baseline is the unigram entropy of those same tokens), exact match "
             f"on {sizes['eval_examples']} held-out instructions (greedy, chat format), preference accuracy on "
             f"{sizes['heldout_pairs']} held-out pairs (chosen answer more likely than rejected)"
             + (f", and lm-eval tasks (0-shot{limit})." if sizes["tasks"] else "."), "",
             "| stage | " + " | ".join(f"{title} {'↑' if up else '↓'}" for _, title, up in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row in ROWS:
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(_fmt(card_value(rows.get(row), key)) for key, _, _ in cols)
                     + " |")
    lines += ["", "| check | holds | figures |", "|---|---|---|"]
    lines += [f"| {claim} | {'yes' if ok else 'no'} | {figures} |" for claim, ok, figures in checks(rows)]
    lines += ["", f"![scores of each stage]({CARD_PNG})", "", f"![training curves]({CURVES_PNG})", "",
              "## Stages", "", "| stage | result | time |", "|---|---|---|"]
    lines += [f"| {name} | {s['line']} | {s['seconds']:.0f} s |" for name, s in stages.items() if s]
    if plan:
        steps = plan["steps"]
        lines += ["", f"Plan (`--minutes {plan['minutes']:g}`): one training step took {plan['step_s'] * 1000:.0f} ms "
                  f"when measured; steps pretrain {steps['pretrain']}, SFT {steps['sft']}, DPO {steps['dpo']} "
                  f"({plan['scale']:.0%} of the recipe's). Sizes: "
                  + ", ".join(f"{k} {v}" for k, v in sizes.items() if k != "tasks") + "."]
    samples = (rows.get("dpo") or {}).get("instruct", {}).get("samples", [])
    if samples:
        lines += ["", "## Answers of the final model (first held-out instructions)", "",
                  "| question | reference | answer | ok |", "|---|---|---|---|"]
        for s in samples:
            cells = [str(s[k]).replace("|", "\\|").replace("\n", " ")[:70] for k in ("question", "reference", "output")]
            lines.append("| " + " | ".join(cells) + f" | {'yes' if s['correct'] else 'no'} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, pngs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_card_png(path: Path, rows: dict, cols: list) -> Path:
    """One bar panel per score, a bar per stage, the value written on each bar."""
    plt = _pyplot()
    ncols = min(len(cols), 4)
    nrows = -(-len(cols) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows + 0.4), squeeze=False)
    colors = {"baseline": "#9e9e9e", "pretrain": "#4c72b0", "sft": "#55a868", "dpo": "#c44e52"}
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(cols):]:
        ax.set_visible(False)
    for ax, (key, title, up) in zip(flat, cols, strict=False):
        names = [r for r in ROWS if card_value(rows.get(r), key) is not None]
        values = [card_value(rows[r], key) for r in names]
        bars = ax.bar([ROW_NAMES[r].replace(" ", "\n") for r in names], values, color=[colors[r] for r in names])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
        unit = "nats/token" if key == "corpus.loss" else "bits/byte" if key == "corpus.bpb" else "share (0-1)"
        ax.set(title=f"{title}\n({'higher' if up else 'lower'} is better)", ylabel=unit)
        if unit.startswith("share"):
            ax.set_ylim(0, 1.1)
        else:
            ax.set_ylim(0, max(values) * 1.15)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("lmforge speedrun: scores of each stage on held-out data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_curves_png(path: Path, out: Path, stages: dict) -> Path:
    """Pretraining loss (with the unigram baseline), SFT loss, DPO loss and held-out win rate, against the step."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, stage, title in ((axes[0][0], "pretrain", "pretraining"), (axes[0][1], "sft", "SFT (answer tokens)")):
        records = read_metrics(stage_dir(out, stage) / "metrics.jsonl")
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and r.get("val_loss") is not None]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1, label="train")
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="held-out")
        if stage == "pretrain":
            base = stages["tokenizer"]["baseline"]["loss"]
            ax.axhline(base, color="gray", linestyle="--", label=f"unigram entropy {base:.2f}")
        ax.set(title=f"{title}: loss", xlabel="step", ylabel="loss (nats/token)")
        ax.legend(fontsize=8)
    records = read_metrics(stage_dir(out, "dpo") / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    val = [r for r in records if r.get("kind") == "val" and r.get("heldout_win_rate") is not None]
    axes[1][0].plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1)
    axes[1][0].set(title="DPO: loss", xlabel="step", ylabel="DPO loss (nats/pair)")
    axes[1][1].plot([r["step"] for r in val], [r["heldout_win_rate"] for r in val], "o-", color="#c44e52")
    axes[1][1].set(title="DPO: held-out preference accuracy", xlabel="step", ylabel="share of pairs (0-1)",
                   ylim=(0, 1.05))
    for ax in (a for row in axes for a in row):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("lmforge speedrun: training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
