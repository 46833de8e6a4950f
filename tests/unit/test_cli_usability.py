"""The CLI as a new user meets it (issue 20, items 14, 16, 17): OpenMP's fast threads, fewer while the CPU is shared,
`--threads`, argument mistakes answered before torch loads, "loading" before the model loads, readable --help."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # what a user may have chosen


def plain_env(**more) -> dict:
    """This environment without the wait variables and the test suite's LMFORGE_THREADS pin, plus `more`."""
    return {**{k: v for k, v in os.environ.items() if k not in (*WAIT_VARS, "LMFORGE_THREADS")}, **more}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-usability")
    tiny_lm().save(path)
    return path


# ---------------------------------------------------------------------------------------------------- item 14
def test_cli_keeps_openmps_fast_wait_policy_and_governs_the_thread_count():
    """A passive wait policy costs batch-1 decode a third on a quiet CPU: the CLI leaves OpenMP's default (an import
    hook records the variable when torch is first imported) and adapts the thread count instead; `lmforge info`
    says both."""
    hook = ("import builtins, os, sys\n"
            "real = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name.split('.')[0] == 'torch' and 'torch' not in sys.modules:\n"
            "        print('policy at torch import:', os.environ.get('OMP_WAIT_POLICY'), file=sys.stderr)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "sys.argv = ['lmforge', 'info', '--json']\n"
            "from lmforge.cli.main import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", hook], capture_output=True, text=True, timeout=120, env=plain_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "policy at torch import: None"
    facts = json.loads(result.stdout)
    assert facts["wait_policy"] == "OpenMP default (spin, then sleep)" and facts["threads"] >= 1
    policy = re.match(r"adaptive, 1-(\d+): fewer while other processes use the CPU", facts["thread_policy"])
    assert (policy and int(policy[1]) >= facts["threads"]) or facts["thread_policy"] == "1 (one core)", facts


def test_a_wait_policy_the_user_chose_is_kept():
    result = subprocess.run([sys.executable, "-m", "lmforge", "info", "--json"], capture_output=True, text=True,
                            timeout=120, env=plain_env(OMP_WAIT_POLICY="ACTIVE"))
    assert json.loads(result.stdout)["wait_policy"] == "OMP_WAIT_POLICY=ACTIVE"


def test_lmforge_threads_pins_the_count():
    result = subprocess.run([sys.executable, "-m", "lmforge", "info", "--json"], capture_output=True, text=True,
                            timeout=120, env=plain_env(LMFORGE_THREADS="1"))
    facts = json.loads(result.stdout)
    assert facts["threads"] == 1 and facts["thread_policy"].startswith("pinned to 1")
    for command in (["info"], ["generate", "the cat", "-n", "1"]):
        result = subprocess.run([sys.executable, "-m", "lmforge", *command], capture_output=True, text=True,
                                timeout=120, env=plain_env(LMFORGE_THREADS="many"))
        assert_user_error(result, "LMFORGE_THREADS", "'many'", "auto")


def test_threads_flag(model_dir):
    result = run_cli("generate", "the cat", "-m", str(model_dir), "-n", "2", "-t", "0", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["threads"] == 1
    assert_user_error(run_cli("generate", "the cat", "-m", str(model_dir), "--threads", "0"), "--threads", "0")
    for command in ("generate", "chat", "serve"):
        assert "--threads" in run_cli(command, "--help").stdout


# ---------------------------------------------------------------------------------------------------- item 16
@pytest.mark.parametrize("assignment,needle", [("lr=abc", "'abc'"), ("max_steps=1.5", "an integer"),
                                               ("resume=1", "true or false"), ("sample_prompts=[1]", "strings")])
def test_pretrain_set_with_a_wrong_type_is_one_line(assignment, needle):
    assert_user_error(run_cli("pretrain", "--set", assignment), assignment.split("=")[0], needle)


def test_wrong_type_in_a_config_file_is_one_line(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('lr = "fast"\n')
    assert_user_error(run_cli("pretrain", "--config", str(config)), "lr", "'fast'", "a number")


def test_argument_mistakes_are_answered_before_torch_loads():
    """`generate` without a prompt used to import torch and the model code first (9 s on a busy machine)."""
    code = ("import sys\nsys.argv = ['lmforge', 'generate']\nfrom lmforge.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert "give either a PROMPT" in result.stderr
    start = time.perf_counter()
    assert_user_error(run_cli("generate"), "PROMPT")
    assert time.perf_counter() - start < 5  # python and the CLI only: well under a second on an idle machine


def test_chat_says_loading_before_the_model_loads():
    missing = run_cli("chat", "-m", "no-such-model")
    lines = missing.stderr.splitlines()
    assert missing.returncode == 2 and lines[0] == "loading no-such-model …" and lines[1].startswith("error: ")
    assert len(lines) == 2 and "no-such-model" in lines[1]


# ---------------------------------------------------------------------------------------------------- item 17
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_help_shows_defaults_without_type_labels_on_flags_and_is_not_cut_to_80_columns(command):
    result = run_cli(command, "--help")  # not a terminal: stdout is a pipe
    assert result.returncode == 0
    text = result.stdout
    assert "[default: 0.2, SmolLM2's recommendation" in text and "[default: 256]" in text
    assert "<bool>" not in text
    assert max(len(line) for line in text.splitlines()) > 100
    flags = [line for line in text.splitlines() if line.strip().startswith(("--help", "--json", "--truncate"))]
    assert flags and all(line.split()[1][0] not in "<[" for line in flags), flags
