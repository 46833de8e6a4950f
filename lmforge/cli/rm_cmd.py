"""`lmforge rm`: train a reward model (a scalar head on an LM backbone, Bradley-Terry loss) on preference pairs.
Thin: its flags are generated from RewardConfig.
"""

from __future__ import annotations

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.train.post.pair_config import RewardConfig


def _rm(cfg: RewardConfig) -> None:
    from lmforge.train.post.reward_train import train_reward_model  # torch loads here, not at --help

    train_reward_model(cfg, log=typer.echo)  # its last line gives the held-out accuracy, the model and the report


rm_command = config_command(RewardConfig, _rm, name="rm", doc="Train a reward model on preference pairs; report "
                            "held-out pairwise accuracy before and after.")
EPILOG = toml_epilog(RewardConfig)
