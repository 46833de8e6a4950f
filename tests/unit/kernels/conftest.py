"""The kernels, built (or loaded) once per session when the first test that needs them runs: never while pytest
collects, so `pytest --collect-only` compiles nothing. A test that needs a kernel this machine cannot have skips."""

import pytest
import torch

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


@pytest.fixture(scope="session")
def quant_ops(ops):
    """The int8 / int4 kernels (on any instruction-set path)."""
    from lmforge.kernels import quant_linear

    if quant_linear.isa() == "none":
        pytest.skip("lmforge's int8 / int4 kernels do not run here (no x86 CPU with AVX2 and FMA)")
    return ops


@pytest.fixture
def quant_layer_ops(quant_ops):
    """The int8 / int4 kernels where Int8Linear / Int4Linear use them (their AVX-512 path). Per test, not per
    session: a session fixture first asked for while a quant_isa test forced AVX2 would skip every later test."""
    from lmforge.kernels import quant_linear

    cpu_kernels.cpu_ops()  # loaded again if an earlier test cleared the cache
    quant_linear.set_isa("default")  # the best path this CPU has, whatever an earlier test forced
    if quant_linear.quant_linear_ops() is None:
        pytest.skip("the quantized layers use lmforge's kernels only on AVX-512 CPUs with AVX512-BF16")
    return quant_ops


@pytest.fixture(params=["avx512", "avx2"])
def quant_isa(request, quant_ops):
    """Each instruction-set path of the int8 / int4 kernels this machine runs (set for the test, then reset)."""
    from lmforge.kernels import quant_linear

    try:
        quant_linear.set_isa(request.param)
    except RuntimeError:
        pytest.skip(f"no {request.param} path in this build")
    yield request.param
    quant_linear.set_isa("default")


@pytest.fixture
def one_thread():
    """One thread: on the loaded 2-core CI machine a tiny layer's parallel region waits ms for its second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
