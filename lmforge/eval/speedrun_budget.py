"""The time plan of `lmforge speedrun --minutes N`: one training step of the run's model is timed on this machine
(random tokens, the run's batch shape), and where the recipe's pretrain + SFT + DPO steps would take more than their
share of the minutes left, pretraining gets fewer steps first, then every stage. Made once, saved as plan.json.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from lmforge.common.device import resolve_device
from lmforge.common.threads import tick as tick_threads
from lmforge.model import Transformer, get_preset

TRAIN_SHARE = 0.7  # of the time left after the tokenizer: the rest goes to evaluations, reference passes, exports
PRETRAIN_FLOOR = 0.25  # pretraining keeps at least this share of its steps before SFT and DPO lose any
MIN_SHARE = 0.1  # no stage drops below this share of the recipe's steps (a run that cannot fit overruns --minutes)
TRAIN_STAGES = ("pretrain", "sft", "dpo")


def step_seconds(preset: str, vocab_size: int, seq_len: int, batch_size: int, threads: int | None,
                 repeats: int = 3, device: str = "cpu") -> float:
    """Seconds of one AdamW step (forward, backward, update) of the preset model on [batch_size, seq_len] random
    tokens on `device` (the run's), after one warm-up step."""
    where = resolve_device(device)
    base = get_preset(preset)
    model = Transformer(base.replace(vocab_size=vocab_size, max_seq_len=max(base.max_seq_len, seq_len))).to(where)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(0))
    ids = ids.to(where)
    times = []
    for _ in range(repeats + 1):
        tick_threads(threads)  # the Trainer's thread policy: pinned by --threads, else fewer while the CPU is shared
        t0 = time.perf_counter()
        logits = model(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if where.type == "cuda":  # the step's kernels are queued: wait for them before reading the clock
            torch.cuda.synchronize(where)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def fit_steps(recipe: dict[str, int], step_s: float, budget_s: float) -> tuple[dict[str, int], float]:
    """(steps per stage, share of the recipe's steps kept): within budget_s, pretraining is cut first (down to
    PRETRAIN_FLOOR of its steps: a shorter pretraining still beats the unigram baseline, while SFT needs its steps to
    learn the answer format), then every stage alike (down to MIN_SHARE)."""
    affordable = budget_s / step_s
    if sum(recipe.values()) <= affordable:
        return dict(recipe), 1.0
    post = sum(n for stage, n in recipe.items() if stage != "pretrain")
    pretrain = max(affordable - post, PRETRAIN_FLOOR * recipe["pretrain"])
    scale = max(min(affordable / (pretrain + post), 1.0), MIN_SHARE)
    steps = {stage: max(1, round((pretrain if stage == "pretrain" else n) * scale)) for stage, n in recipe.items()}
    return steps, sum(steps.values()) / sum(recipe.values())


def make_plan(cfg, sizes: dict, vocab_size: int, seconds_left: float, log) -> dict:
    """{"steps": {stage: steps}, "share", "step_s", ...}: the recipe's steps, cut where they do not fit."""
    recipe = {stage: sizes[f"{stage}_steps"] for stage in TRAIN_STAGES}
    step_s = step_seconds(sizes["preset"], vocab_size, sizes["seq_len"], sizes["batch_size"], cfg.threads,
                          device=getattr(cfg, "device", "cpu"))
    steps, share = fit_steps(recipe, step_s, TRAIN_SHARE * max(seconds_left, 0.0))
    need = sum(recipe.values()) * step_s
    head = (f"plan: one training step takes {step_s * 1000:.0f} ms here; the recipe's "
            f"{' + '.join(str(n) for n in recipe.values())} steps (pretrain + SFT + DPO) need about {need / 60:.1f} "
            f"of the {seconds_left / 60:.1f} minutes left")
    if share == 1.0:
        log(f"{head}: the recipe's steps")
    else:
        log(f"{head} (training gets {TRAIN_SHARE:.0%}): {' + '.join(str(n) for n in steps.values())} steps "
            f"({share:.0%} of the recipe's)")
    return {"recipe": cfg.recipe_name, "seed": cfg.seed, "sizes": sizes, "minutes": cfg.minutes,
            "step_s": step_s, "scale": share, "recipe_steps": recipe, "steps": steps}
