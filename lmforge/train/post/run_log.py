"""What every post-training command leaves in its run directory: metrics.jsonl (one record per logged step),
one PNG curve per logged metric (loss, reward, KL, ...), summary.json and a short markdown report with the
before/after figures the run exists to move.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.train.metrics import MetricsLogger, read_metrics


class RunLog:
    """Metrics for a post-training run: `log({"step": s, "loss": ..., ...})`, then `finish(title, summary)`."""

    def __init__(self, run_dir: str | Path, log=print) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLogger(self.run_dir, tensorboard=False, log=log)
        self.metrics.truncate_after(0)

    def log(self, record: dict) -> None:
        self.metrics.log(record)

    def finish(self, title: str, summary: dict, before_after: dict[str, tuple[float, float]] | None = None) -> Path:
        """Write summary.json, the PNG curves and report.md; returns the report's path."""
        self.metrics.close()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        plots = write_curves(self.run_dir)
        lines = [f"# {title}", ""]
        if before_after:
            lines += ["| metric | before | after |", "| --- | --- | --- |"]
            lines += [f"| {name} | {a:.4g} | {b:.4g} |" for name, (a, b) in before_after.items()] + [""]
        scalars = {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)}
        lines += ["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in scalars.items()], ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots] + [""]
        out = self.run_dir / "report.md"
        out.write_text("\n".join(lines))
        return out


def write_curves(run_dir: str | Path, skip: tuple[str, ...] = ("step", "kind", "elapsed_s")) -> list[Path]:
    """One PNG per numeric metric in run_dir/metrics.jsonl, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "step" in r]
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)})
    written = []
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1, marker="." if len(points) < 50 else None)
        ax.set(xlabel="step", ylabel=key, title=key)
        fig.tight_layout()
        path = run_dir / f"{key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
