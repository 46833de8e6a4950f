"""--device on every command: one resolution (lmforge/common/device.py), answered before any model loads; CUDA
asked for on a machine without it, or a name that is no device, is one line and exit code 2; --device cpu runs."""

import pytest
import torch

from lmforge.common.device import check_device_name, resolve_device
from lmforge.common.errors import LmforgeError
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

# every command of issue #28's list, with the least it needs to reach its device check
COMMANDS = {
    "generate": ["generate", "hi", "-m", "smollm2-135m"], "chat": ["chat", "-m", "smollm2-135m"],
    "serve": ["serve", "smollm2-135m"], "bench decode": ["bench", "decode"],
    "eval run": ["eval", "run", "smollm2-135m", "--tasks", "lmforge_mc"], "pretrain": ["pretrain"],
    "sft": ["sft", "-m", "m"], "dpo": ["dpo", "-m", "m"], "rm": ["rm", "-m", "m"], "ppo": ["ppo", "-m", "m"],
    "grpo": ["grpo", "-m", "m"], "rs": ["rs", "-m", "m"], "classify train": ["classify", "train", "-m", "m"],
    "prm train": ["prm", "train", "-m", "m"], "distill": ["distill", "--teacher", "m"], "clip": ["clip"],
    "vlm": ["vlm"], "speedrun": ["speedrun"], "rlaif": ["rlaif", "--prompts", "p.jsonl", "-o", "o.jsonl",
                                                          "--endpoint", "http://127.0.0.1:9/v1"],
    "embed": ["embed", "m", "hi"], "classify predict": ["classify", "predict", "m", "--text", "hi"],
    "rag index": ["rag", "index", "d", "-o", "o"], "rag ask": ["rag", "ask", "o", "hi"],
    "rag eval": ["rag", "eval", "o", "q.jsonl"],
    "data select": ["data", "select", "i.jsonl", "-o", "o", "--by", "random"],
}
# one per code path: the hand-written inference commands (chat and bench share generate's pick_device), the
# config-generated trainers (TrainConfig, a pair run's config, an RL command's [run] section) whose check is one
# (options_from_config.py), and rlaif's own flag
THROUGH_CLI = ["generate", "serve", "eval run", "pretrain", "dpo", "grpo", "rlaif", "embed", "classify predict"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is valid here")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "mps", "", 3])
def test_a_name_that_is_no_device_is_refused_by_name(name):
    with pytest.raises(LmforgeError, match="is not a device; use auto, cpu, cuda or cuda:N"):
        check_device_name(name)


def test_resolution_without_and_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(LmforgeError, match=f"--device {name}: torch sees no CUDA device here"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(LmforgeError, match=r"cuda:2: only 2 CUDA device\(s\) visible \(cuda:0 .. cuda:1\)"):
        resolve_device("cuda:2")


def test_every_command_has_the_device_flag():
    import typer.main

    from lmforge.cli.main import app

    root = typer.main.get_command(app)
    for name in COMMANDS:
        command = root
        for part in name.split():
            command = command.commands[part]
        option = next((p for p in command.params if p.name == "device"), None)
        assert option is not None and option.default in ("auto", None), name  # None: the config's default, auto
        assert "cuda:N" in option.help, name


@no_gpu
@pytest.mark.parametrize("command", THROUGH_CLI)
def test_device_cuda_without_a_gpu_is_one_line_exit_2(command):
    assert_user_error(run_cli(*COMMANDS[command], "--device", "cuda"), "--device cuda", "no CUDA device")


@pytest.mark.parametrize("command", ["generate", "grpo"])
def test_device_name_is_checked(command):
    assert_user_error(run_cli(*COMMANDS[command], "--device", "gpu"), "'gpu' is not a device")


def test_generate_device_cpu_runs(tmp_path):
    tiny_lm().save(tmp_path / "m")
    result = run_cli("generate", "the cat", "-m", str(tmp_path / "m"), "--device", "cpu", "--max-new-tokens", "4",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert '"completion_tokens": 4' in result.stdout
