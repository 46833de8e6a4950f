"""`lmforge dpo`: preference optimisation of an LM with DPO, IPO, conservative DPO, SimPO or ORPO.
Thin: every flag is a DPOConfig field.
"""

from __future__ import annotations

import typer

from lmforge.cli import pair_options as pairs


def dpo_command(
    model: str = typer.Option(..., "--model", "-m", help="Policy to start from (also the reference): an HF dir, "
                              "a .gguf or smollm2-135m."),
    out: str = typer.Option("runs/dpo", "--out", "-o", help="Run directory (metrics, curves, report, hf/)."),
    loss: str = typer.Option("dpo", "--loss", help="dpo | ipo | cdpo | simpo | orpo."),
    beta: float | None = typer.Option(None, "--beta", help="DPO/cDPO beta, IPO tau, SimPO reward scale "
                                      "(default 0.1; SimPO 2.0; unused by ORPO)."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", help="cDPO: probability a label is flipped."),
    gamma: float = typer.Option(1.0, "--gamma", help="SimPO: target reward margin."),
    orpo_lambda: float = typer.Option(0.1, "--orpo-lambda", help="ORPO: weight of the odds-ratio term."),
    data: str | None = pairs.DATA,
    train_pairs: int = pairs.TRAIN_PAIRS,
    heldout_pairs: int = typer.Option(400, "--heldout-pairs", help="Held-out pairs for the win rate (at most)."),
    task_seed: int = pairs.TASK_SEED,
    max_len: int = pairs.MAX_LEN,
    max_steps: int = typer.Option(150, "--max-steps", help="Optimizer steps."),
    batch_size: int = pairs.BATCH_SIZE,
    grad_accum: int = pairs.GRAD_ACCUM,
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup_steps: int = typer.Option(10, "--warmup-steps", help="Linear warmup steps."),
    weight_decay: float = pairs.WEIGHT_DECAY,
    grad_clip: float = pairs.GRAD_CLIP,
    eval_every: int = typer.Option(25, "--eval-every", help="Held-out win rate every N steps."),
    checkpoint_every: int = pairs.CHECKPOINT_EVERY,
    keep_checkpoints: int = pairs.KEEP_CHECKPOINTS,
    resume: bool = pairs.RESUME,
    fresh: bool = pairs.FRESH,
    progress: bool = pairs.PROGRESS,
    seed: int = typer.Option(0, "--seed", help="Seed of the batch order."),
    threads: int | None = pairs.THREADS,
    export_hf: bool = typer.Option(True, "--export-hf/--no-export-hf", help="Save the trained policy to out/hf."),
) -> None:
    """Align a model on preference pairs; report the held-out chosen-over-rejected win rate vs the reference."""
    flags = dict(locals())  # every flag, taken before the imports below add local names
    from lmforge.train.post.dpo import DPOConfig, train_dpo

    cfg = DPOConfig(**flags)
    train_dpo(cfg, log=typer.echo)  # its last line gives the held-out win rate (and its pair count) and the report
