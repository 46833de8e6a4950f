"""Training progress of `pretrain`, `sft` and `distill`, named after the command: on a terminal a rich bar with ETA
and the latest train / validation loss; elsewhere (nohup, CI, a pipe), where a bar would only show at the end, one
plain log line every `every_s` seconds and at each tenth of the run. Disabled (--no-progress, tests): nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lmforge.train.number_format import eta_text, fmt_number


class TrainProgress:
    """`update(step, loss, val, tokens)` after each optimizer step; tokens: the run's tokens so far (for tokens/s).
    terminal: None asks rich whether stdout is a terminal. val_name: what the held-out figure is called."""

    def __init__(self, total: int, completed: int, enabled: bool, *, label: str = "pretrain",
                 log: Callable[[str], None] = print, every_s: float = 10.0, tokens: int = 0,
                 terminal: bool | None = None, val_name: str = "val") -> None:
        self.total, self.label, self.log, self.every_s, self.val_name = total, label, log, every_s, val_name
        self._first_step, self._tokens = completed, tokens
        self._progress, self._lines = None, False
        if enabled and (Console().is_terminal if terminal is None else terminal):
            self._progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"))
            self._task = self._progress.add_task(label, total=total, completed=completed, info="")
        else:
            self._lines = enabled

    def __enter__(self) -> TrainProgress:
        self._start = self._last_time = time.perf_counter()
        self._last_step = self._first_step
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, step: int, loss: float, val: float | None, tokens: int | None = None) -> None:
        losses = [f"loss {fmt_number(loss)}"] + ([f"{self.val_name} {fmt_number(val)}"] if val is not None else [])
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=" ".join(losses))
        elif self._lines and self._due(step):
            now = time.perf_counter()
            line = f"{self.label} step {step}/{self.total} ({step / max(self.total, 1):.0%}): {', '.join(losses)}"
            if tokens is not None:
                line += f", {(tokens - self._tokens) / max(now - self._last_time, 1e-9):,.0f} tokens/s"
                self._tokens = tokens
            self.log(f"{line}, {eta_text(step - self._first_step, self.total - self._first_step, now - self._start)}")
            self._last_time, self._last_step = now, step

    def _due(self, step: int) -> bool:
        """The first step, the last, each tenth of the run, and at least every every_s seconds in between."""
        tenth = max(1, self.total // 10)
        return (self._last_step == self._first_step or step >= self.total or step // tenth > self._last_step // tenth
                or time.perf_counter() - self._last_time >= self.every_s)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
