"""The scaling-law figure: measured loss vs parameters per token budget with the fitted L(N, D) curves, and the
iso-FLOP curves L(N, C / 6N) with their minima (the compute-optimal frontier). matplotlib's Agg canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.train.scaling_law import ScalingLaw


def plot_scaling(result: dict, law: ScalingLaw, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    n = np.array([r["params"] for r in runs], dtype=float)
    d = np.array([r["tokens"] for r in runs], dtype=float)
    loss = np.array([r["val_loss"] for r in runs], dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    n_axis = np.geomspace(n.min() / 2, n.max() * 2, 100)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(np.unique(d))))
    for color, tokens in zip(colors, np.unique(d), strict=True):
        sel = d == tokens
        left.scatter(n[sel], loss[sel], color=color, zorder=3, label=f"D = {tokens / 1e3:.0f}k tokens")
        left.plot(n_axis, law.loss(n_axis, tokens), color=color, lw=1)
    left.axhline(law.E, color="grey", ls=":", lw=1, label=f"E = {law.E:.3f}")
    left.set(xscale="log", xlabel="non-embedding parameters N", ylabel="validation loss (nats/token)",
             title=f"L = {law.E:.2f} + {law.A:.3g}/N^{law.alpha:.2f} + {law.B:.3g}/D^{law.beta:.2f}")
    left.legend(fontsize=8)
    flops = 6 * n * d
    budgets = np.geomspace(flops.min(), flops.max() * 100, 5)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(budgets)))
    best_n, best_l = [], []
    for color, c in zip(colors, budgets, strict=True):
        opt = law.compute_optimal(float(c))
        axis = np.geomspace(opt["n_opt"] / 30, opt["n_opt"] * 30, 100)
        right.plot(axis, law.loss(axis, c / (6 * axis)), color=color, lw=1, label=f"C = {c:.2g} FLOPs")
        best_n.append(opt["n_opt"])
        best_l.append(opt["loss"])
    right.plot(best_n, best_l, "k--o", ms=4, lw=1, label="compute-optimal N_opt(C)")
    right.set(xscale="log", xlabel="non-embedding parameters N", ylabel="fitted loss",
              title=f"iso-FLOP curves (C = 6ND); N_opt ~ C^{law.beta / (law.alpha + law.beta):.2f}")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
