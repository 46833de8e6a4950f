"""Shared fixtures: deterministic seeds, a quiet transformers, a tiny model whose greedy output depends on context."""

import os

import pytest
import torch

from lmforge.common.threads import ENV, cpu_count, set_threads, threads_from_env

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
