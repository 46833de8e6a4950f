"""`lmforge sft`: supervised fine-tuning on chat data (messages JSONL, Alpaca, ShareGPT) or the embedded
instruction task, loss on assistant tokens only. Thin: its flags are generated from SFTConfig.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.train.post.sft_config import SFTConfig


def _sft(cfg: SFTConfig) -> None:
    from lmforge.train.post.sft import sft  # torch loads here, not at --help

    s = sft(cfg, log=typer.echo)  # its log gives the held-out exact match before -> after (once)
    typer.echo(f"{s['status']}: {s['step']} steps in {s['elapsed_s']:.0f} s; report {Path(cfg.out) / 'report.md'}"
               + (f"; model {s['hf']}" if s.get("hf") else "")
               + (f"; adapter {s['adapter']}" if s.get("adapter") else ""))


sft_command = config_command(SFTConfig, _sft, name="sft", doc="Supervised fine-tuning (loss on assistant tokens "
                             "only); prints held-out exact match before and after.")
EPILOG = toml_epilog(SFTConfig)
