"""keep_freed_memory: a step's freed buffers are reused, not unmapped and faulted in again on the next step."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, torch
from lmforge.common.allocator import keep_freed_memory

def step():  # a training step's buffers: held together, freed together (8-64 MiB)
    held = [torch.empty(n).fill_(1.0) for n in (1 << 21, 1 << 22, 1 << 23, 1 << 24, 1 << 22)]
    del held

def faults_per_step():
    step()  # the first time always faults
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

default = faults_per_step()
assert keep_freed_memory() and keep_freed_memory()  # once per process, idempotent
print(default, faults_per_step())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}).stdout.split()
    default, kept = float(out[0]), float(out[1])
    assert default > 10_000  # glibc unmaps what it mmapped: its pages fault in again each step
    assert kept < default / 4
