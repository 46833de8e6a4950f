"""A rich progress bar with ETA and the latest train / validation loss; a no-op when disabled (tests, logs)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, completed: int, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None
        if enabled:
            self._progress = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"))
            self._task = self._progress.add_task("train", total=total, completed=completed, info="")

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, step: int, loss: float, val: float | None) -> None:
        if self._progress is not None:
            info = f"loss {loss:.3f}" + (f" val {val:.3f}" if val is not None else "")
            self._progress.update(self._task, completed=step, info=info)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
