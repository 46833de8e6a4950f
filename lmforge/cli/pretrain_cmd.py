"""`lmforge pretrain`: train a model from scratch (by default a small preset on the embedded synthetic corpus)
and `lmforge report RUN_DIR`: the markdown report of a run. Thin: its flags are generated from TrainConfig.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.common.files import ensure_output_dir
from lmforge.train.config import TrainConfig


def _pretrain(cfg: TrainConfig) -> None:
    ensure_output_dir(cfg.out)  # an unwritable --out is a one-line error before anything slow
    from lmforge.train.pretrain import pretrain  # torch and torch.distributed load here, not at --help

    summary = pretrain(cfg, log=typer.echo)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        val = summary["val_loss"]
        typer.echo(f"{summary['status']}: {summary['step']} steps, {summary['tokens']:,} tokens in "
                   f"{summary['elapsed_s']:.0f} s; validation loss "
                   f"{'-' if val is None else f'{val:.3f}'} vs unigram baseline {summary['unigram_entropy']:.3f} "
                   f"nats/token -> {cfg.out}/report.md")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_torchrun_rank()


pretrain_command = config_command(TrainConfig, _pretrain, name="pretrain", doc="Pretrain a language model; by "
                                  "default a small model on the embedded synthetic corpus (minutes on a CPU).")
EPILOG = toml_epilog(TrainConfig)


def _leave_torchrun_rank() -> None:
    """End a torchrun rank whose run is complete (process group destroyed, every file written and closed) without the
    interpreter's teardown: there, gloo / FSDP objects still alive can abort the process ("terminate called without an
    active exception", seen in 1 two-rank FSDP run of 10 on a loaded 2-core machine), which torchrun reports as a
    failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def report_command(run_dir: Path = typer.Argument(..., help="A pretraining run directory.")) -> None:
    """Write RUN_DIR/report.md (summary, loss / lr / throughput plots, samples)."""
    from lmforge.train.report import write_report

    typer.echo(f"wrote {write_report(run_dir)}")
