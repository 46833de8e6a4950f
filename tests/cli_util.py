"""Running the real `lmforge` entry point in a subprocess, and the shape every user mistake must have."""

import os
import subprocess
import sys

from tests.cli_fork import run_forked


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m lmforge ARGS`: forked from a warm server (tests/cli_fork.py) unless LMFORGE_TEST_FORK=0."""
    if os.environ.get("LMFORGE_TEST_FORK", "1") != "0":
        result = run_forked([str(a) for a in args], timeout)
        if result is not None:
            return result
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, no traceback, one line on stderr that contains every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
