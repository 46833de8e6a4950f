"""What `lmforge dpo`, `lmforge rm` and `lmforge grpo` print and write (issue 20, items 18 and 20), through the real
entry point on a tiny random model: the held-out figure is printed once, with the number of held-out examples it
rests on and a warning when they are too few to mean anything; printed lines and report.md hold no raw floats
(`36.91891670227051`) and their markdown tables stay tables."""

import json

import pytest

from tests.cli_util import assert_user_error, run_cli
from tests.readable_output import long_floats
from tests.tiny_lm import tiny_lm


@pytest.fixture(scope="module")
def tiny_and_pairs(tmp_path_factory):
    """(model dir, a JSONL of 24 preference pairs: few enough that the held-out split is under 8 pairs)."""
    root = tmp_path_factory.mktemp("post")
    tiny_lm().save(root / "tiny")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {a}+{a}?", "chosen": str(2 * a),
                                         "rejected": str(2 * a + 1)}) + "\n" for a in range(24)))
    return root / "tiny", pairs


def check_readable(stdout: str, report: str) -> None:
    assert not long_floats(stdout), long_floats(stdout)
    assert not long_floats(report), long_floats(report)
    for line in report.splitlines():  # every row of a table has as many cells as its header
        if line.startswith("|"):
            assert line.replace("\\|", "").count("|") in (3, 4, 5), line


@pytest.mark.parametrize("command, figure", [("dpo", "held-out win rate"), ("rm", "held-out pairwise accuracy")])
def test_preference_runs_print_the_heldout_figure_once_with_its_count(tmp_path, tiny_and_pairs, command, figure):
    model, pairs = tiny_and_pairs
    out = tmp_path / command
    result = run_cli(command, "--model", str(model), "--data", str(pairs), "--out", str(out), "--max-steps", "2",
                     "--batch-size", "4", "--eval-every", "1", "--threads", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    held = json.loads((out / "summary.json").read_text())["heldout_pairs"]
    assert 0 < held < 8
    final = [line for line in result.stdout.splitlines() if line.startswith(figure) and "->" in line]
    assert len(final) == 1 and f"on {held} pairs" in final[0], result.stdout
    assert f"warning: only {held} held-out pairs" in result.stdout
    report = (out / "report.md").read_text()
    assert f"warning: only {held} held-out pairs" in report and f", {held} pairs |" in report
    check_readable(result.stdout, report)


def test_rl_run_prints_and_reports_formatted_numbers(tmp_path, tiny_and_pairs):
    model, _ = tiny_and_pairs
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--model", str(model), "--out", str(out), "--steps", "2", "--prompts-per-step", "2",
                     "--group-size", "4", "--minibatch-size", "8", "--max-new-tokens", "4", "--eval-prompts", "4",
                     "--eval-every", "1", "--threads", "1", "--no-export-hf", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "on 4 problems" in result.stdout and "warning: only 4 held-out problems" in result.stdout
    assert "elapsed 0:00:" in result.stdout  # step lines say how long the run has taken and has left
    report = (out / "report.md").read_text()
    assert "| elapsed_s | " in report and "KL(policy \\|\\| reference)" in report
    check_readable(result.stdout, report)


def test_rl_task_without_heldout_problems_is_a_user_error(tmp_path, tiny_and_pairs):
    model, _ = tiny_and_pairs  # add with operands in [0, 1]: 4 problems, none held out (the task drew for ever)
    result = run_cli("rs", "--model", str(model), "--out", str(tmp_path / "rs"), "--max-operand", "1", timeout=60)
    assert_user_error(result, "--max-operand 1", "no held-out problems")
    assert not (tmp_path / "rs").exists()
