"""The kernels, built (or loaded) once per session when the first test that needs them runs: never while pytest
collects, so `pytest --collect-only` compiles nothing. A test that needs a kernel this machine cannot have skips."""

import pytest

from lmforge.kernels import cpu_kernels


@pytest.fixture(scope="session")
def ops():
    ops = cpu_kernels.cpu_ops()
    if ops is None:
        pytest.skip(f"lmforge's CPU kernels are not available here: {cpu_kernels.kernel_state().describe()}")
    return ops


@pytest.fixture(scope="session")
def bf16_ops(ops):
    bf16 = cpu_kernels.bf16_linear_ops()
    if bf16 is None:
        pytest.skip("no AVX512-BF16 CPU (or a compiler that does not emit it) here")
    return bf16


@pytest.fixture(scope="session")
def f32_ops(ops):
    f32 = cpu_kernels.f32_linear_ops()
    if f32 is None:
        pytest.skip("no AVX-512 CPU here")
    return f32
