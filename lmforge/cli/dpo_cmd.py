"""`lmforge dpo`: preference optimisation of an LM with DPO, IPO, conservative DPO, SimPO or ORPO.
Thin: every flag is a DPOConfig field.
"""

from __future__ import annotations

import typer


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
    data: str | None = typer.Option(None, "--data", help="JSONL of {prompt, chosen, rejected} (default: the "
                                    "embedded preference task)."),
    train_pairs: int = typer.Option(2000, "--train-pairs", help="Training pairs (at most)."),
    heldout_pairs: int = typer.Option(400, "--heldout-pairs", help="Held-out pairs for the win rate (at most)."),
    task_seed: int = typer.Option(0, "--task-seed", help="Seed of the embedded preference task."),
    max_len: int = typer.Option(256, "--max-len", help="Tokens per prompt + answer (the prompt's start is cut)."),
    max_steps: int = typer.Option(150, "--max-steps", help="Optimizer steps."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Pairs per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup_steps: int = typer.Option(10, "--warmup-steps", help="Linear warmup steps."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay of the matrices."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clip (0: none)."),
    eval_every: int = typer.Option(25, "--eval-every", help="Held-out win rate every N steps."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Checkpoint (out/checkpoints) every N "
                                         "steps and at the end."),
    keep_checkpoints: int = typer.Option(2, "--keep-checkpoints", help="Newest checkpoints kept."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out (only corrupt "
                                "ones: refused, see --fresh)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start from step 0 even where --out holds checkpoints: they "
                               "are moved aside to checkpoints.old."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress: a bar with ETA on a terminal, "
                                  "step lines elsewhere."),
    seed: int = typer.Option(0, "--seed", help="Seed of the batch order."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    export_hf: bool = typer.Option(True, "--export-hf/--no-export-hf", help="Save the trained policy to out/hf."),
) -> None:
    """Align a model on preference pairs; report the held-out chosen-over-rejected win rate vs the reference."""
    flags = dict(locals())  # every flag, taken before the imports below add local names
    from lmforge.train.post.dpo import DPOConfig, train_dpo

    cfg = DPOConfig(**flags)
    train_dpo(cfg, log=typer.echo)  # its last line gives the held-out win rate (and its pair count) and the report
