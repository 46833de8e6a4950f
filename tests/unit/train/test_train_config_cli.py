"""TrainConfig from TOML and flags; user mistakes give one-line errors and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.common.errors import ConfigError
from lmforge.train.config import TrainConfig, parse_assignment

ROOT = Path(__file__).resolve().parents[3]


def test_toml_tables_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('out = "x"\n[optim]\nlr = 0.01\nschedule = "wsd"\n[data]\nseq_len = 64\n'
                    'sample_prompts = ["a", "b"]\n')
    cfg = TrainConfig.from_toml(path, max_steps=7)
    assert (cfg.out, cfg.lr, cfg.schedule, cfg.seq_len, cfg.max_steps) == ("x", 0.01, "wsd", 64, 7)
    assert cfg.sample_prompts == ("a", "b")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad, field", [({"lr": 0}, "lr"), ({"schedule": "linear"}, "schedule"),
                                        ({"grad_accum": 0}, "grad_accum"), ({"bogus": 1}, "bogus"),
                                        ({"data_dir": "d"}, "tokenizer_dir")])
def test_invalid_values_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict(bad)


def test_parse_assignment():
    assert parse_assignment("lr=1e-3") == ("lr", 1e-3)
    assert parse_assignment("schedule=wsd") == ("schedule", "wsd")
    assert parse_assignment("export_hf=false") == ("export_hf", False)
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        parse_assignment("lr")


def test_cli_user_error_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(tmp_path), "--set", "nope=1"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown TrainConfig field(s): nope")
    assert "Traceback" not in result.stderr
