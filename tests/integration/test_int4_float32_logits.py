"""The README's int4 question (issue 20, item 15): after `lmforge quantize smollm2-135m --bits 4 --group-size 32`,
greedy `lmforge chat` answers Paris. With bf16 logits "The" and "L" tied and it began "L'Étoile, la Marseillaise"."""

import subprocess
import sys

import pytest

from tests.cli_util import run_cli

pytestmark = pytest.mark.slow


def test_int4_smollm2_greedy_chat_says_paris(tmp_path):
    out = tmp_path / "smollm2-int4"
    quantized = run_cli("quantize", "smollm2-135m", "--bits", "4", "--group-size", "32", "--out", str(out), timeout=600)
    assert quantized.returncode == 0, quantized.stderr
    chat = subprocess.run([sys.executable, "-m", "lmforge", "chat", "-m", str(out), "-t", "0", "-n", "12"],
                          input="What is the capital of France?\n/exit\n", capture_output=True, text=True, timeout=600)
    assert chat.returncode == 0, chat.stderr
    answer = chat.stdout.split(">>> ")[1]
    assert answer.startswith("The capital of France is Paris"), chat.stdout
