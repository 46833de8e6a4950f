"""Learning-rate schedules as pure functions of the step: linear warmup then cosine decay (GPT-3 / Chinchilla),
warmup-stable-decay (WSD, MiniCPM; Hägele et al. 2024) or constant. Pure functions need no scheduler state in
a checkpoint: the step is enough to resume exactly.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, max_steps: int, warmup_steps: int, schedule: str = "cosine",
          min_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """The learning rate of optimizer step `step` (0-based). Warmup rises linearly to `peak` at step
    warmup_steps - 1; cosine then falls to peak * min_ratio at the last step; WSD holds `peak` and decays
    linearly to peak * min_ratio over the last decay_fraction of the steps."""
    floor = peak * min_ratio
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    last = max(max_steps - 1, 1)
    if schedule == "cosine":
        span = max(last - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(round(decay_fraction * max_steps), 1)
        decay_start = max(last - decay_steps, warmup_steps)
        if step <= decay_start:
            return peak
        progress = min((step - decay_start) / max(last - decay_start, 1), 1.0)
        return peak + (floor - peak) * progress
    raise ValueError(f"unknown schedule {schedule!r}; allowed: cosine, wsd, constant")
