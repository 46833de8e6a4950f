"""The sections every trainer's config shares (torchtitan-style: one frozen, validated dataclass per concern):
optimizer, learning-rate schedule, batch shape, checkpoints and logging. A trainer's config nests them
(`cfg.optim.lr`, `[optim]` in TOML) with its own defaults; its CLI flags stay flat (`--lr`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmforge.common.config_fields import setting
from lmforge.common.device import DEVICE_HELP, check_device_name
from lmforge.common.errors import ConfigError, LmforgeError

SCHEDULES = ("cosine", "wsd", "constant")


def check_run(config: object) -> None:
    """The fields a model-loading run shares (model, seed, threads, resume, fresh): a model named, a seed >= 0,
    threads >= 1 when set, not both resume and fresh."""
    if not isinstance(config.model, str) or not config.model:
        raise ConfigError("model must name a model (an HF directory, a .gguf file or smollm2-135m)")
    check_ints(config, 0, "seed")
    check_threads_and_resume(config)


def check_threads_and_resume(config: object) -> None:
    """threads >= 1 when set; not both resume and fresh (a run continues, or starts over)."""
    if config.threads is not None:
        check_ints(config, 1, "threads")
    if config.resume and config.fresh:
        raise ConfigError("resume and fresh exclude each other: continue the run, or start over")


def check_device(config: object, name: str = "device") -> None:
    """The field is a device name: auto | cpu | cuda | cuda:N (lmforge.common.device; CUDA's presence is checked
    when the run resolves it)."""
    try:
        check_device_name(getattr(config, name), f"{type(config).__name__}.{name}")
    except LmforgeError as err:
        raise ConfigError(str(err)) from None


def device_setting() -> str:
    """The `device` field every trainer's config carries (--device)."""
    return setting("auto", DEVICE_HELP)


def check_ints(section: object, minimum: int, *names: str) -> None:
    """Each named field is an integer >= minimum (a bool is not an integer)."""
    for name in names:
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(f"{type(section).__name__}.{name}={value!r}: must be {what}")


def check_between(section: object, name: str, lo: float, hi: float | None = None) -> None:
    """lo <= field <= hi, a finite number (hi None: no upper bound)."""
    value = getattr(section, name)
    if not (math.isfinite(value) and lo <= value) or (hi is not None and value > hi):
        raise ConfigError(f"{type(section).__name__}.{name}={value!r}: must be in [{lo}, "
                          f"{'inf' if hi is None else hi}]" + (", a finite number" if hi is None else ""))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with decoupled weight decay on the matrices, and global-norm gradient clipping."""

    lr: float = setting(3e-3, "Peak learning rate.")
    weight_decay: float = setting(0.1, "AdamW weight decay of the matrices.")
    beta1: float = setting(0.9, "AdamW beta1.")
    beta2: float = setting(0.95, "AdamW beta2.")
    eps: float = setting(1e-8, "AdamW epsilon.")
    grad_clip: float = setting(1.0, "Max global gradient norm; 0 disables clipping (the norm is still logged).")

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"OptimConfig.lr must be > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            check_between(self, name, 0, 1)
        check_between(self, "weight_decay", 0)
        check_between(self, "grad_clip", 0)
        if not self.eps > 0:
            raise ConfigError(f"OptimConfig.eps must be > 0, got {self.eps!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """How long the run is and the learning rate over it: linear warmup, then cosine, WSD or constant."""

    max_steps: int = setting(200, "Optimizer steps in total.")
    warmup_steps: int = setting(20, "Linear warmup steps.")
    lr_schedule: str = setting("cosine", "After warmup: cosine | wsd (warmup-stable-decay) | constant.",
                               flag=("--lr-schedule", "--schedule"))
    min_lr_ratio: float = setting(0.1, "Final lr = lr * min_lr_ratio.")
    decay_fraction: float = setting(0.2, "WSD: share of the steps spent in the final linear decay.")

    def __post_init__(self) -> None:
        check_ints(self, 1, "max_steps")
        check_ints(self, 0, "warmup_steps")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"ScheduleConfig.lr_schedule={self.lr_schedule!r}; allowed: {', '.join(SCHEDULES)}")
        for name in ("min_lr_ratio", "decay_fraction"):
            check_between(self, name, 0, 1)


@dataclass(frozen=True)
class BatchConfig:
    """How many rows make a micro-batch and how many micro-batches one optimizer step (the length of a row is the
    data section's: it depends on what a row holds)."""

    batch_size: int = setting(16, "Rows (sequences, or pairs) per micro-batch, per rank.", short="-b")
    grad_accum: int = setting(1, "Micro-batches per optimizer step (the loss is the mean over the whole step).")

    def __post_init__(self) -> None:
        check_ints(self, 1, "batch_size", "grad_accum")


@dataclass(frozen=True)
class CheckpointConfig:
    """Atomic checkpoints in OUT/checkpoints, the newest few kept."""

    checkpoint_every: int = setting(100, "Checkpoint every N steps (and at the end).")
    keep_checkpoints: int = setting(2, "Newest checkpoints kept.")

    def __post_init__(self) -> None:
        check_ints(self, 1, "checkpoint_every", "keep_checkpoints")


@dataclass(frozen=True)
class LoggingConfig:
    """What the run reports and how often: metrics.jsonl records, held-out evaluation, progress, TensorBoard."""

    log_every: int = setting(5, "Write a train record (metrics.jsonl) every N steps.")
    eval_every: int = setting(50, "Held-out evaluation every N steps.")
    progress: bool = setting(True, "Progress: a bar with ETA on a terminal, else (pipe, nohup, CI) a log line each "
                             "tenth of the run or 10 s.")
    tensorboard: bool = setting(False, "Also write TensorBoard scalars (needs the tensorboard package).")

    def __post_init__(self) -> None:
        check_ints(self, 1, "log_every", "eval_every")
