"""`lmforge sft` user mistakes: one line, exit code 2, no traceback (through the real entry point)."""

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge", "sft", *args], capture_output=True, text=True,
                          timeout=120)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_sft_user_errors(tmp_path):
    assert_user_error(run_cli("--out", str(tmp_path / "o")), "SFTConfig.model is required")
    assert_user_error(run_cli("--model", "m", "--format", "csv"), "SFTConfig.format='csv'")
    assert_user_error(run_cli("--model", "m", "--data", str(tmp_path / "missing.jsonl")), "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert_user_error(run_cli("--model", "m", "--data", str(bad)), "bad.jsonl line 1", "no assistant turn")
