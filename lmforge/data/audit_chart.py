"""The audit chart: documents in/out per pipeline step and removals by reason, as one PNG beside report.md
(the per-stage funnel FineWeb and DCLM plot for their filtering recipes).
Rendered with matplotlib's Agg canvas directly, so no display and no pyplot global state are involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHART_FILE = "report.png"
MAX_REASONS = 20  # the most frequent removal reasons shown; the rest are summed into "other"


def _reasons(stats: dict[str, Any]) -> list[tuple[str, int]]:
    counts = [(reason, n) for s in stats["steps"] for reason, n in s["removed"].items()]
    counts.sort(key=lambda kv: (-kv[1], kv[0]))
    if len(counts) > MAX_REASONS:
        rest = sum(n for _, n in counts[MAX_REASONS - 1 :])
        counts = counts[: MAX_REASONS - 1] + [("other", rest)]
    return counts


def render_chart(stats: dict[str, Any], path: Path) -> None:
    """Write the PNG: grouped bars of docs in/out per step (left), removals by reason (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: matplotlib is slow to import
    from matplotlib.figure import Figure

    steps = stats["steps"]
    reasons = _reasons(stats)
    fig = Figure(figsize=(12, max(4.0, 0.35 * max(len(steps), len(reasons)) + 1.5)), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    names = [s["name"] for s in steps]
    y = list(range(len(steps)))
    left.barh([i - 0.2 for i in y], [s["docs_in"] for s in steps], height=0.4, label="docs in", color="#9ecae1")
    left.barh([i + 0.2 for i in y], [s["docs_out"] for s in steps], height=0.4, label="docs out", color="#3182bd")
    left.set_yticks(y, names)
    left.invert_yaxis()  # pipeline order from top to bottom
    left.set_xlabel("documents")
    left.set_title("documents in / out per step")
    left.legend(loc="lower right")
    if reasons:
        right.barh(range(len(reasons)), [n for _, n in reasons], color="#e6550d")
        right.set_yticks(range(len(reasons)), [r for r, _ in reasons], fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("documents removed")
    else:
        right.text(0.5, 0.5, "nothing was removed", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    right.set_title("removals by reason")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
