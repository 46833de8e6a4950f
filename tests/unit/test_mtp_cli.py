"""`lmforge generate --draft mtp`: the model's own MTP head drafts (JSON reports acceptance); a clear error when the
model has none."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.model.mtp import MultiTokenPrediction
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    plain, with_mtp = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("mtp")
    tiny_lm(0).save(plain)
    lm = tiny_lm(0)
    torch.manual_seed(1)
    lm.mtp = MultiTokenPrediction(lm.config.replace(n_mtp_modules=2)).eval()
    lm.save(with_mtp)
    return str(plain), str(with_mtp)


def generate_json(*args) -> dict:
    result = CliRunner().invoke(app, ["generate", *args, "-t", "0", "-n", "12", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_draft_mtp_without_mtp_weights_is_a_user_error(dirs):
    plain, _ = dirs
    assert_user_error(run_cli("generate", "the cat", "-m", plain, "--draft", "mtp", "-n", "4"),
                      "--draft mtp", "mtp.safetensors", plain)


def test_draft_mtp_reports_acceptance_and_plain_greedy_text(dirs):
    _, with_mtp = dirs
    plain = generate_json("the cat sat on the mat. the cat", "-m", with_mtp)
    spec = generate_json("the cat sat on the mat. the cat", "-m", with_mtp, "--draft", "mtp", "--num-draft", "4")
    assert spec["text"] == plain["text"]
    stats = spec["speculative"]
    assert stats["draft"] == "mtp" and stats["target_forwards"] >= 1
    assert 0 < stats["proposed"] <= 2 * stats["target_forwards"]  # at most one draft per MTP depth per round
    assert stats["acceptance_rate"] == round(stats["accepted"] / stats["proposed"], 4)
