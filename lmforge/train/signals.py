"""Graceful stop on SIGINT / SIGTERM: the handler only sets a flag; the training loop finishes the current
step, saves a checkpoint and returns, so a Ctrl-C or a cluster preemption never loses more than one step.
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager installing the handlers (main thread only) and restoring the previous ones on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
