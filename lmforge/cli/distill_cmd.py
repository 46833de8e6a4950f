"""`lmforge distill`: train a student on a teacher's soft targets (temperature, forward or reverse KL, mixed with
cross-entropy). Thin: its flags are generated from DistillRunConfig (the student's TrainConfig, the teacher and a
[distill] section).
"""

from __future__ import annotations

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.train.distill_config import DistillRunConfig


def _distill(cfg: DistillRunConfig) -> None:
    from lmforge.train.distill_run import distill  # torch loads here, not at --help

    s = distill(cfg.train_config(), cfg.teacher, cfg.distill, log=typer.echo)
    typer.echo(f"{s['status']}: {s['step']} steps in {s['elapsed_s']:.0f} s; held-out KL(teacher||student) "
               f"{s['kl_before']:.4f} -> {s['kl_after']:.4f} nats/token ({s['kind']}); validation CE "
               f"{s['val_loss']:.3f} -> {cfg.out}")


distill_command = config_command(DistillRunConfig, _distill, name="distill",
                                 doc="Distil a teacher into a (smaller) student with the same vocabulary.")
EPILOG = toml_epilog(DistillRunConfig)
