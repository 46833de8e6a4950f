"""`lmforge speedrun`: tokenizer -> pretrain -> SFT -> DPO -> eval -> report card, end to end on the embedded data
(nanochat's speedrun, on a laptop). Thin: its flags are generated from SpeedrunConfig; the run is lmforge.eval.speedrun.
"""

from __future__ import annotations

import sys

import typer

from lmforge.cli.options_from_config import config_command
from lmforge.common.files import ensure_output_dir
from lmforge.eval.speedrun_config import SpeedrunConfig


def _speedrun(cfg: SpeedrunConfig) -> None:
    ensure_output_dir(cfg.out)  # an unwritable --out is a one-line error before anything slow
    from lmforge.eval.speedrun import Speedrun, SpeedrunInterrupted  # torch loads here, not at --help

    try:
        result = Speedrun(cfg, log=typer.echo).run()
    except SpeedrunInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        sys.exit(130)
    typer.echo(f"speedrun finished in {result['seconds'] / 60:.1f} min: report card {result['report']}")


speedrun_command = config_command(
    SpeedrunConfig, _speedrun, name="speedrun",
    doc="Train a small model end to end on the embedded data and write a report card: a byte-level BPE tokenizer, "
        "pretraining, SFT on the instruction task, DPO on preference pairs, then the same task set (held-out bits per "
        "byte vs the unigram baseline, instruction exact match, preference accuracy, lm-eval tasks) scored on each "
        "stage's model, written to OUT/report.md with PNGs. About 10 minutes on 2 CPU cores (--tiny: seconds); each "
        "stage prints progress and works in its own OUT/N-stage directory. Ctrl-C stops at a checkpoint: rerun the "
        "same command to resume (finished stages are skipped; --out must hold a run with the same settings).")
EPILOG = ("Sizes left unset take the recipe's values (the default recipe, or --tiny's); a recipe TOML (--config) sets "
          "any flag by its name with underscores, e.g. pretrain_steps = 1000.")
