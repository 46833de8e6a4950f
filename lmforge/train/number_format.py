"""Figures as people read them, in log lines and reports: floats with four significant digits (never
`36.91891670227051`), large values with thousands separators, durations as h:mm:ss."""

from __future__ import annotations

import math


def fmt_number(value) -> str:
    """4 significant digits for floats (0.0927, 36.92, 1,235), thousands separators for ints; anything else as is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size == 0 or size >= 1e-3:
        return f"{value:.4g}"
    return f"{value:.3g}"  # 2.24e-05


def fmt_duration(seconds: float) -> str:
    """h:mm:ss (the hours grow past 24 rather than turning into days)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """'elapsed 0:01:02, ETA 0:03:00' after `done` of `total` units took elapsed_s (ETA at the average rate so far)."""
    remaining = (total - done) * elapsed_s / done if done > 0 else math.inf
    return f"elapsed {fmt_duration(elapsed_s)}, ETA {fmt_duration(remaining)}"
