"""TrainConfig from TOML and flags; user mistakes give one-line errors and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli.options_from_config import parse_assignment
from lmforge.common.errors import ConfigError
from lmforge.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[3]


def test_toml_tables_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('out = "x"\nseq_len = 64\n[optim]\nlr = 0.01\n[schedule]\nlr_schedule = "wsd"\n'
                    '[samples]\nsample_prompts = ["a", "b"]\n')
    cfg = TrainConfig.from_toml(path, max_steps=7)
    assert (cfg.out, cfg.optim.lr, cfg.schedule.lr_schedule, cfg.data.seq_len) == ("x", 0.01, "wsd", 64)
    assert cfg.schedule.max_steps == 7 and cfg.samples.sample_prompts == ("a", "b")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad, field", [({"lr": 0}, "lr"), ({"lr_schedule": "linear"}, "lr_schedule"),
                                        ({"grad_accum": 0}, "grad_accum"), ({"bogus": 1}, "bogus"),
                                        ({"data_dir": "d"}, "tokenizer_dir")])
def test_invalid_values_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict(bad)


def test_parse_assignment():
    assert parse_assignment(TrainConfig, "lr=1e-3") == ("lr", 1e-3)
    assert parse_assignment(TrainConfig, "lr_schedule=wsd") == ("lr_schedule", "wsd")
    assert parse_assignment(TrainConfig, "export_hf=false") == ("export_hf", False)
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        parse_assignment(TrainConfig, "lr")


def test_cli_user_error_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--out", str(tmp_path), "--set", "nope=1"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown TrainConfig field(s): nope")
    assert "Traceback" not in result.stderr


def test_sections_nest_by_concern_and_flat_names_reach_them():
    cfg = TrainConfig.from_dict({"lr": 0.01, "schedule": {"max_steps": 9}, "batch_size": 4})
    assert (cfg.optim.lr, cfg.schedule.max_steps, cfg.batch.batch_size) == (0.01, 9, 4)
    changed = cfg.replace(warmup_steps=3, optim={"beta2": 0.99})
    assert (changed.schedule.warmup_steps, changed.optim.beta2, changed.optim.lr) == (3, 0.99, 0.01)
    assert TrainConfig.from_dict(changed.to_dict()) == changed  # JSON-able, nested like the TOML tables
    with pytest.raises(ConfigError, match=r"OptimConfig\.lr"):  # validation sits with the section's fields
        cfg.replace(lr=-1.0)
    with pytest.raises(ConfigError, match=r"schedule\.lr"):  # a knob in the wrong table is refused by name
        TrainConfig.from_dict({"schedule": {"lr": 0.1}})
