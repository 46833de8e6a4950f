"""What `lmforge pretrain` and `lmforge sft` print (issue 20, items 18 and 20), through the real entry point: off a
terminal (a pipe, nohup, CI) progress comes as plain step lines at intervals, named after the command, with
formatted numbers and no bar control characters; on a terminal the bar carries the command's name. SFT on a small
file works with the default batch size (clamped, with a note), prints the held-out figure once with its count and
a warning when it is too small, writes a report without Python reprs, and a run that fails before training leaves
no run directory behind."""

import json
import re

import pytest

from tests.cli_util import assert_user_error, run_cli
from tests.readable_output import BAR_CHARACTERS, long_floats, run_in_terminal
from tests.tiny_lm import tiny_lm

STEP_LINE = re.compile(r"^pretrain step (\d+)/6 \(\d+%\): loss \d+\.\d{1,3}(, val \d+\.\d{1,3})?, [\d,]+ tokens/s, "
                       r"elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$")


def test_pretrain_off_a_terminal_logs_step_lines(tmp_path):
    result = run_cli("pretrain", "--out", str(tmp_path / "run"), "--preset", "tiny-llama", "--corpus-documents", "200",
                     "--vocab-size", "300", "--seq-len", "32", "--batch-size", "4", "--max-steps", "6",
                     "--threads", "1", "--device", "cpu", "--precision", "fp32", "--eval-every", "3",
                     "--set", "sample_every=1000",
                     "--set", "peak_tflops=1.0", "--set", "export_hf=false")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("corpus: generating 200 documents"), lines[:2]  # said before the silent minute
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, result.stdout.splitlines()) if m]
    assert steps[0] == 1 and steps[-1] == 6 and steps == sorted(steps), result.stdout
    assert not [c for c in BAR_CHARACTERS if c in result.stdout + result.stderr]
    assert not long_floats(result.stdout), long_floats(result.stdout)


@pytest.fixture(scope="module")
def small_sft(tmp_path_factory):
    """(model dir, a chat file of 20 short conversations: 16 train / 4 held out, 2 packed rows of 256 tokens)."""
    root = tmp_path_factory.mktemp("small_sft")
    tiny_lm().save(root / "tiny")
    convs = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]
             for w in ("red", "blue", "green", "pink", "gold") * 4]
    data = root / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    return root / "tiny", data


def test_sft_on_a_small_file_works_with_the_defaults(tmp_path, small_sft):
    model, data = small_sft
    code, text = run_in_terminal("sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "run"),
                                 "--max-steps", "3", "--threads", "1")  # every other setting: the default
    assert code == 0, text
    assert "using batch_size=2" in text  # 2 rows of data, batch size 16 by default
    assert "sft" in text and "pretrain" not in text  # the bar names the command
    assert "━" in text  # on a terminal: a bar, not step lines
    assert "sft step" not in text
    held = [line for line in text.splitlines() if "held-out exact match" in line and "->" in line]
    assert len(held) == 1 and "(4 conversations)" in held[0], text
    assert "warning: only 4 held-out conversations" in text
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"Data: {data};" in report and "('" not in report and "warning: only 4 held-out" in report
    assert json.loads((tmp_path / "run" / "sft_config.json").read_text())["batch"]["batch_size"] == 2


def test_sft_failing_before_training_leaves_no_run_directory(tmp_path, small_sft):
    model, data = small_sft
    result = run_cli("sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "run"),
                     "--device", "cpu", "--lora-r", "4", "--lora-target", "nope", "--threads", "1")
    assert_user_error(result, "'nope' matches no linear layer")  # refused after the model loads (fp16 now trains)
    assert not (tmp_path / "run").exists()


def test_step_lines_come_at_each_tenth_and_at_intervals():
    from lmforge.train.progress import TrainProgress

    lines = []
    with TrainProgress(100, 0, True, label="distill", log=lines.append, every_s=3600, terminal=False) as bar:
        for step in range(1, 101):
            bar.update(step, 2.0, None, tokens=step * 64)
    assert [int(line.split()[2].split("/")[0]) for line in lines] == [1, *range(10, 101, 10)]
    assert all(line.startswith("distill step ") for line in lines)
    with TrainProgress(100, 40, True, log=lines.append, every_s=0.0, terminal=False) as bar:  # resumed at step 40
        bar.update(41, 2.0, 1.5)
        bar.update(42, 2.0, 1.5)
    assert lines[-2].startswith("pretrain step 41/100 (41%): loss 2, val 1.5, elapsed") and "42/100" in lines[-1]
    with TrainProgress(100, 0, False, log=lines.append, terminal=False) as bar:  # --no-progress: silent
        bar.update(1, 2.0, None)
    assert "42/100" in lines[-1]
