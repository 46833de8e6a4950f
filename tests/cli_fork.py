"""`run_cli` without an interpreter start-up per call.

Every `python -m lmforge ...` a test starts pays ~2 s of CPU to import torch and the CLI before it does anything (a
user mistake is answered in 0.1 s after that); the suite starts ~170 of them. Instead, each test process keeps one
warm server that has imported them once and forks a child per call. The child is still a separate process: its own
globals, torch thread pool (OpenMP is not started in the server: nothing runs an op there), signal handlers,
working directory, umask and environment (the caller's, at the time of the call); it runs the real entry point
(`runpy` of `lmforge.__main__`, as `python -m lmforge` does), its stdout / stderr go to files the caller reads,
and its exit code comes back. A call past its timeout is killed and raises subprocess.TimeoutExpired, as
subprocess.run does. `LMFORGE_TEST_FORK=0` turns it off (plain subprocesses).
"""

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_server: subprocess.Popen | None = None
_pending = b""  # bytes read from the server past the last line
forked_cpu_s = 0.0  # CPU seconds of every child forked so far (a test-time profiler may read it)


def _start() -> subprocess.Popen | None:
    global _server, _pending
    if _server is not None and _server.poll() is None:
        return _server
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    _server = subprocess.Popen([sys.executable, "-m", "tests.cli_fork"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=env, cwd=ROOT)
    _pending = b""
    atexit.register(_server.kill)
    if _read_line(_server, 300) != "ready":
        _server.kill()
        _server = None
    return _server


def _read_line(server: subprocess.Popen, timeout: float) -> str | None:
    """The server's next line, or None after `timeout` seconds. Reads the pipe's file descriptor itself: select on
    a buffered file object misses a line already sitting in its buffer (and would wait out the timeout)."""
    global _pending
    fd, deadline = server.stdout.fileno(), time.monotonic() + timeout
    while b"\n" not in _pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError("the lmforge fork server ended")
        _pending += chunk
    line, _, _pending = _pending.partition(b"\n")
    return line.decode()


def run_forked(args: list[str], timeout: float, env: dict | None = None,
               on_start=None) -> subprocess.CompletedProcess | None:
    """The CompletedProcess of `python -m lmforge ARGS` (environment `env`, default ours), or None when the server is
    unavailable. `on_start(pid)` is called once the child runs (a test may SIGKILL it). Not thread-safe: one call at
    a time per process."""
    global forked_cpu_s
    server = _start()
    if server is None:
        return None
    with tempfile.TemporaryDirectory(prefix="lmforge-cli-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        umask = os.umask(0)
        os.umask(umask)
        request = {"argv": args, "env": dict(os.environ if env is None else env), "cwd": os.getcwd(), "umask": umask,
                   "out": str(out), "err": str(err)}
        server.stdin.write((json.dumps(request) + "\n").encode())
        server.stdin.flush()
        pid = int(_read_line(server, 60))
        if on_start is not None:
            on_start(pid)
        code = _read_line(server, timeout)
        timed_out = code is None
        if timed_out:
            os.kill(pid, signal.SIGKILL)  # the server has not reaped it yet (no exit code sent): still our child's
            code = _read_line(server, 60)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    if timed_out:
        raise subprocess.TimeoutExpired(["lmforge", *args], timeout, stdout, stderr)
    code, cpu_s = code.split()
    forked_cpu_s += float(cpu_s)
    return subprocess.CompletedProcess([sys.executable, "-m", "lmforge", *args], int(code), stdout, stderr)


def _child(request: dict) -> None:
    code = 1
    try:
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY | os.O_CREAT),
                                (2, request["err"], os.O_WRONLY | os.O_CREAT)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["lmforge", *request["argv"]]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import runpy

        try:
            runpy.run_module("lmforge", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit as child_atexit

            child_atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve() -> None:
    import torch._dynamo  # noqa: F401  torch.optim's first add_param_group imports it: 1.6 s of CPU per run

    import lmforge.cli.main  # noqa: F401  torch, typer and the command table, imported once
    import lmforge.formats.loader  # noqa: F401
    import lmforge.train.trainer  # noqa: F401  what every training command imports

    channel = sys.stdout
    print("ready", file=channel, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(pid, file=channel, flush=True)
        _, status, usage = os.wait4(pid, 0)
        print(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, file=channel, flush=True)


if __name__ == "__main__":
    _serve()
