"""`lmforge dpo`: preference optimisation of an LM with DPO, IPO, conservative DPO, SimPO or ORPO.
Thin: its flags are generated from DPOConfig.
"""

from __future__ import annotations

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.train.post.pair_config import DPOConfig


def _dpo(cfg: DPOConfig) -> None:
    from lmforge.train.post.dpo import train_dpo  # torch loads here, not at --help

    train_dpo(cfg, log=typer.echo)  # its last line gives the held-out win rate (and its pair count) and the report


dpo_command = config_command(DPOConfig, _dpo, name="dpo", doc="Align a model on preference pairs; report the "
                             "held-out chosen-over-rejected win rate vs the reference.")
EPILOG = toml_epilog(DPOConfig)
