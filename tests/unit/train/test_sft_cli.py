"""`lmforge sft` user mistakes: one line, exit code 2, no traceback (through the real entry point)."""

from tests.cli_util import assert_user_error, run_cli


def test_sft_user_errors(tmp_path):
    assert_user_error(run_cli("sft", "--out", str(tmp_path / "o")), "--model is required")
    assert_user_error(run_cli("sft", "--model", "m", "--format", "csv"), "format='csv'")
    assert_user_error(run_cli("sft", "--model", "m", "--resume", "--fresh"), "resume and fresh exclude each other")
    assert_user_error(run_cli("sft", "--model", "m", "--data", str(tmp_path / "missing.jsonl")), "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert_user_error(run_cli("sft", "--model", "m", "--data", str(bad)), "bad.jsonl line 1", "no assistant turn")
