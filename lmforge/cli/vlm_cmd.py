"""`lmforge vlm`: LLaVA-style two-stage vision-language training on drawn scenes (stage 1: the interface on
captions; stage 2: instruction tuning on visual questions), held-out VQA exact match before / after each stage.
Thin: its flags are generated from VlmConfig; the work is in lmforge/train/vlm_*.py.
"""

from __future__ import annotations

import typer

from lmforge.cli.options_from_config import config_command
from lmforge.train.vlm_config import VlmConfig, check_paths


def _vlm(cfg: VlmConfig) -> None:
    check_paths(cfg)
    from lmforge.train.vlm_run import train_vlm  # torch loads here, not at --help or a wrong flag

    summary = train_vlm(cfg, log=typer.echo)
    if "vqa_exact_match" not in summary:
        return
    figures = "; ".join(f"stage {s['stage']} {s['before']['vqa_exact_match']:.1%} -> "
                        f"{s['after']['vqa_exact_match']:.1%}" for s in summary["stages"])
    where = f"wrote {summary['hf_dir']} (a Hugging Face LLaVA directory)" if summary["hf_dir"] else \
        f"wrote {cfg.out}/summary.json"
    typer.echo(f"held-out VQA exact match: {figures}; {where}")


vlm_command = config_command(VlmConfig, _vlm, name="vlm",
                             doc="Train a vision-language model in two stages (LLaVA recipe) on drawn scenes: a CLIP "
                             "tower, an interface (projector | qformer | cross-attention) and an LLM; held-out VQA "
                             "exact match before / after each stage.")
