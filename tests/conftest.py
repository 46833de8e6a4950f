"""Shared fixtures: deterministic seeds, a quiet transformers, a tiny model whose greedy output depends on context."""

import os

import pytest
import torch

from lmforge.common.threads import ENV, cpu_count, set_threads, threads_from_env
from tests.tiny_llava import llava_dir, llava_lm  # noqa: F401  (session fixtures: a tiny LLaVA directory)

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest-xdist workers share the cores: pin their share, so no
    share = max(1, cpu_count() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))  # OpenMP barrier spins against
    os.environ.setdefault(ENV, str(share))  # the other worker; the CLI processes the tests start inherit it
set_threads(threads_from_env())

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def context_llama():
    """The tiny Llama of tests/context_lm.py (init std 0.3: greedy output depends on the context), shared by every
    test that only reads it; call context_model() for a copy to quantize or prepare."""
    from tests.context_lm import context_model

    return context_model()


# The README's second test pass, `LMFORGE_CPU_KERNELS=0 python -m pytest -m pure`: the tests of code that has both a
# C++ kernel and a pure-PyTorch path (paged attention, the sampler's argmax, prepare_for_inference's norms, RoPE and
# linears, the int8 head), run again without the kernels, as every macOS user and most laptops run lmforge. Only the
# in-process ones: CLI subprocesses, real-model speed checks and statistical sampling tests add minutes and test
# nothing the kernels change that the in-process tests do not.
PURE_PATHS = tuple(f"tests/unit/{path}" for path in (
    "engine/", "server/test_fault_isolation.py", "server/test_disconnect_and_body.py", "server/test_client_mistakes.py",
    "test_generate.py", "test_fast_decode.py", "test_beam_search.py", "test_speculative.py", "test_sampling.py",
    "test_stop.py", "test_rolling_cache.py", "test_inference_prepare.py", "test_float32_logits.py",
    "test_packed_linear.py", "test_backend_table.py", "test_decode_core.py", "test_static_cache.py",
    "test_attention_backend.py"))
NOT_PURE = ("cli", "smollm2", "distribution", "chi_square")  # in a test's name


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith(PURE_PATHS) and not any(word in item.name for word in NOT_PURE):
            item.add_marker(pytest.mark.pure)


@pytest.fixture
def weight_only_activations():
    """Quantized layers on the weight-only path (bf16 activations, LMFORGE_INT8_ACTIVATIONS=0) for the test: for
    tests comparing them with the dequantized product or PyTorch's weight-only ops (kernels/quant_linear.py)."""
    from lmforge.kernels import quant_linear

    previous = quant_linear.set_int8_activations(False)
    yield
    quant_linear.set_int8_activations(previous)
