"""A pytest plugin that writes each test's CPU time (this process, its waited-for children, and the `lmforge`
calls forked from the warm CLI server) and wall time to a JSONL file: what docs/benchmarks.md's suite figures rank
tests by, since wall time on a shared machine moves with the load.

    CPU_TIME_OUT=cpu.jsonl python -m pytest -q -p tests.cpu_time
"""

import json
import os
import resource
import time

import pytest

from tests import cli_fork


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + cli_fork.forked_cpu_s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = _cpu_seconds(), time.perf_counter()
    yield
    record = {"id": item.nodeid, "cpu_s": round(_cpu_seconds() - cpu, 3),
              "wall_s": round(time.perf_counter() - wall, 3), "worker": os.environ.get("PYTEST_XDIST_WORKER", "-")}
    with open(os.environ.get("CPU_TIME_OUT", "cpu_time.jsonl"), "a") as out:
        out.write(json.dumps(record) + "\n")
