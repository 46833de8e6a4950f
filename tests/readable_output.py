"""Checks on what a command prints for people: numbers with sensible precision, and no progress-bar control
characters where the output is not a terminal; plus running a command in a pseudo-terminal (where bars show)."""

import os
import pty
import re
import select
import sys
import time

FLOAT = re.compile(r"(?<![\w.])-?(\d[\d,]*)\.(\d+)(?:e[-+]?\d+)?")
BAR_CHARACTERS = ("\x1b", "\r", "━", "╸", "╺")


def long_floats(text: str, max_digits: int = 5) -> list[str]:
    """Decimal numbers in text (paths left out) with more than max_digits significant digits."""
    words = " ".join(w for w in text.split() if "/" not in w)
    return [m.group(0) for m in FLOAT.finditer(words)
            if len((m.group(1) + m.group(2)).replace(",", "").lstrip("0")) > max_digits]


def run_in_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """(exit code, everything printed) of `python -m lmforge ARGS` on a pseudo-terminal of 120 columns."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.environ.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
        os.execv(sys.executable, [sys.executable, "-m", "lmforge", *args])
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    else:
        os.kill(pid, 9)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")
