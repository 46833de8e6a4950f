"""PNG plots of a run from its metrics.jsonl: train and validation loss (with the unigram baseline), learning
rate, and throughput. Drawn on matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.train.metrics import read_metrics

PLOTS = ("loss.png", "lr.png", "throughput.png")


def write_plots(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    if not train:
        return []
    summary_path = run_dir / "summary.json"
    baseline = json.loads(summary_path.read_text()).get("unigram_entropy") if summary_path.is_file() else None
    steps = [r["step"] for r in train]
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        plt.close(fig)
        written.append(run_dir / name)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in train], label="train", linewidth=1)
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"unigram entropy {baseline:.2f}")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    ax.legend()
    save(fig, "loss.png")

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, [r["lr"] for r in train])
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    save(fig, "lr.png")

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, [r["tokens_per_s"] for r in train])
    ax.set(xlabel="step", ylabel="tokens / s", title="throughput")
    save(fig, "throughput.png")
    return written
