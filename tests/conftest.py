"""Shared fixtures: deterministic seeds, a quiet transformers, a tiny model whose greedy output depends on context."""

import os

from lmforge.common.threads import configure_openmp

configure_openmp()  # before torch loads: idle OpenMP threads sleep instead of spinning against the other worker

import pytest  # noqa: E402
import torch  # noqa: E402

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
