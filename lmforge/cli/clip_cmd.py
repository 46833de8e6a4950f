"""`lmforge clip`: contrastive pretraining of a tiny CLIP two-tower model on drawn shape x colour images, with
zero-shot accuracy on held-out images before and after. Thin: its flags are generated from ClipTrainConfig.
"""

from __future__ import annotations

import typer

from lmforge.cli.options_from_config import config_command
from lmforge.train.clip_config import ClipTrainConfig


def _clip(cfg: ClipTrainConfig) -> None:
    from lmforge.train.clip_train import train_clip  # torch loads here, not at --help or a wrong flag

    summary = train_clip(cfg, log=typer.echo)
    typer.echo(f"zero-shot accuracy: before {summary['before']:.1%} after {summary['after']:.1%}; "
               f"wrote {cfg.out}/model (a Hugging Face CLIP directory)")


clip_command = config_command(ClipTrainConfig, _clip, name="clip",
                              doc="Train a tiny CLIP on drawn images; held-out zero-shot accuracy before / after.")
