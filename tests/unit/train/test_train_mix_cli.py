"""`lmforge pretrain --mix`: the run's own shards mixed with replay of the embedded corpus by weight, the shares it
reports, the cursor its checkpoints keep, and the one-line errors for a bad mix."""

import json

import pytest

from tests.cli_util import assert_user_error, run_cli


def _args(out, data, tok, *extra):
    return ["pretrain", "--out", str(out), "--data-dir", str(data), "--tokenizer", str(tok), "--preset", "tiny-llama",
            "--batch-size", "4", "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "100", "--threads", "1",
            "--no-progress", "--device", "cpu", "--precision", "fp32", "--set", "sample_every=1000",
            "--set", "export_hf=false", *extra]


def test_pretrain_mixes_replay_by_weight(packed, tmp_path):
    data, tok, _ = packed
    result = run_cli(*_args(tmp_path / "run", data, tok, "--mix", "corpus:0.25", "--corpus-documents", "60"),
                     timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mix"] == {"data": 0.75, "corpus": 0.25}  # 16 rows: 12 of the run's data, 4 replayed
    assert (tmp_path / "run" / "replay" / "index.json").is_file()
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["loader"]["counts"] == [12, 4] and state["loader"]["names"] == ["data", "corpus"]


def test_bad_mix_is_a_one_line_error(packed, tmp_path):
    data, tok, _ = packed
    assert_user_error(run_cli(*_args(tmp_path / "a", data, tok, "--mix", "corpus:0.7", "--mix", f"{data}:0.5")),
                      "sum to 1.2")
    assert_user_error(run_cli(*_args(tmp_path / "b", data, tok, "--mix", "corpus")), "'corpus'", "PATH:WEIGHT")
    assert_user_error(run_cli(*_args(tmp_path / "c", data, tok, "--mix", f"{tmp_path}:0.2")), "holds no index.json")


def test_mix_in_the_toml_data_section(tmp_path):
    from lmforge.common.errors import ConfigError
    from lmforge.train.config import TrainConfig

    path = tmp_path / "run.toml"
    path.write_text('[data]\nmix = ["corpus:0.3", "shards/code:0.2"]\n')
    assert TrainConfig.from_toml(path).data.mix == ("corpus:0.3", "shards/code:0.2")
    path.write_text('[data]\nmix = ["corpus:0.6", "shards/code:0.4"]\n')
    with pytest.raises(ConfigError, match="sum to 1"):
        TrainConfig.from_toml(path)
