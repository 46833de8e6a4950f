"""Flags declared once (issue 22, item 4): every training command's options are generated from its config, so each
config field has a flag and each flag is a field or one of the documented command-level flags (--config, --set,
--help); `--config FILE.toml` works for each, flags winning over the file, and file mistakes are one-line errors."""

import ast
import json
from pathlib import Path

import pytest
import typer

from lmforge.cli.main import app
from lmforge.cli.options_from_config import COMMAND_FLAGS
from lmforge.common.config_fields import leaves, sections
from lmforge.train.config import TrainConfig
from lmforge.train.distill_config import DistillRunConfig
from lmforge.train.post.pair_config import DPOConfig, RewardConfig
from lmforge.train.post.rl_config import GRPOConfig, PPOConfig, RSConfig, rl_command_config
from lmforge.train.post.sft_config import SFTConfig
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

CLI = Path(__file__).resolve().parents[2] / "lmforge" / "cli"
TRAINING = {"pretrain": TrainConfig, "sft": SFTConfig, "distill": DistillRunConfig, "rm": RewardConfig,
            "dpo": DPOConfig, "ppo": rl_command_config("ppo", PPOConfig),
            "grpo": rl_command_config("grpo", GRPOConfig), "rs": rl_command_config("rs", RSConfig)}


def _options(name: str) -> dict:
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params if p.param_type_name == "option"}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_each_field_has_a_flag_and_each_flag_is_a_field(name):
    options, knobs = _options(name), leaves(TRAINING[name])
    assert set(options) - {"help"} == set(knobs) | set(COMMAND_FLAGS)
    for field, leaf in knobs.items():
        option = options[field]
        assert option.opts[0] == leaf.flags[0] and option.help and leaf.help in option.help, field
        if leaf.required:
            assert "[required]" in option.help
    # a TOML file names the same knobs: flat, or in the section tables the --help epilog lists
    command = typer.main.get_command(app).commands[name]
    assert all(f"[{section}]" in command.epilog for section in sections(TRAINING[name]))


def test_no_training_command_restates_a_field_as_a_hand_written_option():
    """The training command modules hold no typer.Option at all: their flags come from the configs."""
    modules = [f"{name}_cmd.py" for name in TRAINING] + ["rl_common.py"]
    for module in modules:
        tree = ast.parse((CLI / module).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "Option"]
        assert not calls, f"{module}: hand-written typer.Option at line {calls[0].lineno}"


def test_help_is_complete_and_readable():
    text = " ".join(run_cli("dpo", "--help").stdout.split())  # wrapped lines joined
    for flag in ("--config", "--set", "--model", "--beta", "--lr", "--max-steps", "--batch-size", "--resume",
                 "--fresh", "--no-export-hf", "[default: 0.0003]", "[required]", "[optim] lr"):
        assert flag in text, flag
    assert "--lr-schedule, --schedule" in run_cli("pretrain", "--help").stdout  # the old flag name still works


@pytest.fixture(scope="module")
def tiny_and_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flags")
    tiny_lm().save(root / "tiny")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {a}+{a}?", "chosen": str(2 * a),
                                         "rejected": str(2 * a + 1)}) + "\n" for a in range(24)))
    return root / "tiny", pairs


def test_dpo_config_file_with_a_flag_override(tmp_path, tiny_and_pairs):
    model, pairs = tiny_and_pairs
    run = tmp_path / "run.toml"
    run.write_text(f'model = "{model}"\nbeta = 0.5\nloss = "ipo"\nthreads = 1\nexport_hf = false\n'
                   f'[data]\ndata = "{pairs}"\nmax_len = 64\n[optim]\nlr = 0.002\n[schedule]\nmax_steps = 1\n'
                   '[batch]\nbatch_size = 4\n[logging]\nprogress = false\n')
    result = run_cli("dpo", "--config", str(run), "--beta", "0.2", "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "summary.json").read_text())["config"]
    assert config["beta"] == 0.2  # the flag wins over the file's 0.5
    assert (config["loss"], config["optim"]["lr"], config["schedule"]["max_steps"]) == ("ipo", 0.002, 1)
    assert config["data"]["max_len"] == 64 and config["batch"]["batch_size"] == 4


def test_config_file_mistakes_are_one_line_errors(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text('model = "m"\nbeta = 0.2\n[optim]\nlearning_rate = 0.1\n')
    assert_user_error(run_cli("dpo", "--config", str(run)), "unknown OptimConfig field(s): optim.learning_rate")
    run.write_text('model = "m"\nbeat = 0.2\n')
    assert_user_error(run_cli("dpo", "--config", str(run)), "unknown DPOConfig field(s): beat")
    run.write_text('model = "m"\n[schedule]\nmax_steps = "many"\n')
    assert_user_error(run_cli("dpo", "--config", str(run)), "max_steps", "an integer", "'many'")
    run.write_text('model = "m"\nbeta = [0.1]\n')
    assert_user_error(run_cli("grpo", "--config", str(run)), "beta", "a number")
    assert_user_error(run_cli("dpo", "--config", str(tmp_path / "missing.toml")), "missing.toml")
    assert_user_error(run_cli("rm", "--max-steps", "3"), "--model is required")
    assert_user_error(run_cli("rs", "--model", "m", "--set", "n=0"), "RSConfig.n=0: must be a positive integer")
