"""`lmforge generate --draft/--num-draft` (speculative) and `--rope-scaling/--rope-factor/--max-context`."""

import json

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from tests.tiny_lm import tiny_lm


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    target, draft = tmp_path_factory.mktemp("target"), tmp_path_factory.mktemp("draft")
    tiny_lm(0).save(target)
    tiny_lm(1).save(draft)
    return str(target), str(draft)


def assert_user_error(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, args)  # main() turns LmforgeError into "error: ..." and exit 2
    assert isinstance(result.exception, LmforgeError) and needle in str(result.exception), result


def generate_json(*args) -> dict:
    result = CliRunner().invoke(app, ["generate", *args, "-t", "0", "-n", "12", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("draft", ["ngram", "model"])
def test_speculative_cli_prints_acceptance_and_plain_greedy_text(dirs, draft):
    target, draft_dir = dirs
    plain = generate_json("the cat sat on the mat. the cat", "-m", target)
    spec = generate_json("the cat sat on the mat. the cat", "-m", target, "--draft",
                         draft_dir if draft == "model" else "ngram", "--num-draft", "3")
    assert spec["text"] == plain["text"]
    stats = spec["speculative"]
    assert stats["target_forwards"] >= 1 and 0 <= stats["accepted"] <= stats["proposed"]
    assert stats["acceptance_rate"] == round(stats["accepted"] / max(stats["proposed"], 1), 4)


def test_rope_scaling_flags_allow_a_longer_prompt(dirs):
    target, _ = dirs
    long_prompt = "hello world " * 60  # ~300 tokens > 256, the tiny model's context
    assert_user_error(["generate", long_prompt, "-m", target, "-n", "2"], "context")
    out = generate_json(long_prompt, "-m", target, "--rope-scaling", "linear", "--rope-factor", "2")
    assert out["completion_tokens"] >= 1
    assert_user_error(["generate", "hi", "-m", target, "--rope-scaling", "dynamic", "--rope-factor", "2"],
                      "dynamic")
