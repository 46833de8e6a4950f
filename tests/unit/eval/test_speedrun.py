"""`lmforge speedrun --tiny` through the real CLI: every stage runs (tokenizer -> pretrain -> SFT -> DPO -> eval ->
report), the report card has a row of numeric scores per stage and its PNGs; a rerun on the same --out skips the
finished stages, and one with other settings is refused in one line."""

import json
import re

import pytest

from lmforge.common.errors import LmforgeError
from lmforge.eval.speedrun import Speedrun
from lmforge.eval.speedrun_config import STAGES, SpeedrunConfig
from lmforge.eval.speedrun_report import checks
from tests.cli_util import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun") / "run"
    result = run_cli("speedrun", "--tiny", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def card_rows(report: str) -> dict[str, list[str]]:
    """The cells of the report card's rows (the table whose header starts with `| stage | held-out loss`)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| stage | held-out loss"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def test_tiny_speedrun_writes_the_report_card(tiny_run):
    out, stdout = tiny_run
    for i, stage in enumerate(STAGES, 1):  # a progress line as each stage starts and ends
        assert len(re.findall(rf"^\[{i}/6\] {stage}: ", stdout, re.M)) == 2, stdout
    assert "pretrain step 8/8" in stdout and "sft step 4/4" in stdout and "dpo step 3/3" in stdout
    rows = card_rows((out / "report.md").read_text())
    assert list(rows) == ["unigram baseline", "pretrain", "SFT", "DPO"]
    for name, cells in rows.items():
        numeric = {k: float(v) for k, v in cells.items() if v != "-"}
        assert all(v >= 0 for v in numeric.values())
        assert "held-out bits/byte ↓" in numeric and "held-out loss (nats/token) ↓" in numeric
        if name != "unigram baseline":  # the model stages have every score
            assert set(numeric) == set(cells), cells
            assert 0 <= numeric["instruct exact match ↑"] <= 1 and 0 <= numeric["preference accuracy ↑"] <= 1
    for png in ("report_card.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    scores = json.loads((out / "5-eval" / "stage.json").read_text())["scores"]
    # bits per byte is the loss rescaled by the same tokens/bytes ratio for every stage
    ratios = {s: v["corpus"]["bpb"] / v["corpus"]["loss"] for s, v in scores.items()}
    assert max(ratios.values()) - min(ratios.values()) < 1e-9


def test_rerun_skips_finished_stages_and_refuses_other_settings(tiny_run):
    out, _ = tiny_run
    lines = []
    Speedrun(SpeedrunConfig(out=str(out), tiny=True), log=lines.append).run()
    skipped = [line for line in lines if "done in an earlier run" in line]
    assert len(skipped) == len(STAGES), lines
    with pytest.raises(LmforgeError, match=r"other settings \(pretrain_steps=8 there, 9 now\)"):
        Speedrun(SpeedrunConfig(out=str(out), tiny=True, pretrain_steps=9), log=lines.append).run()


def test_a_bad_task_is_refused_before_any_stage(tmp_path):
    with pytest.raises(LmforgeError, match="unknown task 'nope_task'"):
        Speedrun(SpeedrunConfig(out=str(tmp_path / "run"), tiny=True, tasks=("nope_task",))).run()
    assert not (tmp_path / "run").exists()


def test_checks_compare_the_right_rows():
    rows = {"baseline": {"corpus": {"bpb": 2.0}}, "pretrain": {"corpus": {"bpb": 1.0}, "instruct": {"exact_match": 0.0},
                                                               "preference": {"accuracy": 0.5}},
            "sft": {"corpus": {"bpb": 1.1}, "instruct": {"exact_match": 0.6}, "preference": {"accuracy": 0.5}},
            "dpo": {"corpus": {"bpb": 1.1}, "instruct": {"exact_match": 0.6}, "preference": {"accuracy": 0.8}}}
    assert [ok for _, ok, _ in checks(rows)] == [True, True, True]
    rows["sft"]["instruct"]["exact_match"] = 0.0
    assert [ok for _, ok, _ in checks(rows)] == [True, False, True]
