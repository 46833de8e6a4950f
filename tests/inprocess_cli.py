"""The `lmforge` entry point run inside the test process: the same argument parsing, commands and one-line error
handling as the console script (lmforge.cli.main.main), without an interpreter start-up and torch import per
call (seconds each on a busy 2-core machine). Returns what tests/cli_util.py's run_cli returns."""

import subprocess
import sys
from unittest import mock


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    from lmforge.cli.main import main

    capsys.readouterr()  # drop what the test printed before
    code = 0
    with mock.patch.object(sys, "argv", ["lmforge", *map(str, args)]):
        try:
            main()
        except SystemExit as stop:  # click exits 0 after a command, 2 on a usage error; main 2 on LmforgeError
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["lmforge", *map(str, args)], code, captured.out, captured.err)
