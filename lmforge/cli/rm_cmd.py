"""`lmforge rm`: train a reward model (a scalar head on an LM backbone, Bradley-Terry loss) on preference pairs.
Thin: every flag is a RewardConfig field.
"""

from __future__ import annotations

import typer

from lmforge.cli import pair_options as pairs


def rm_command(
    model: str = typer.Option(..., "--model", "-m", help="Backbone to start from: an HF dir, a .gguf or "
                              "smollm2-135m."),
    out: str = typer.Option("runs/rm", "--out", "-o", help="Run directory (metrics, curves, report, "
                            "reward_model/)."),
    data: str | None = pairs.DATA,
    train_pairs: int = pairs.TRAIN_PAIRS,
    heldout_pairs: int = typer.Option(400, "--heldout-pairs", help="Held-out pairs for the accuracy (at most)."),
    task_seed: int = pairs.TASK_SEED,
    max_len: int = pairs.MAX_LEN,
    max_steps: int = typer.Option(250, "--max-steps", help="Optimizer steps."),
    batch_size: int = pairs.BATCH_SIZE,
    grad_accum: int = pairs.GRAD_ACCUM,
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup_steps: int = typer.Option(20, "--warmup-steps", help="Linear warmup steps."),
    weight_decay: float = pairs.WEIGHT_DECAY,
    grad_clip: float = pairs.GRAD_CLIP,
    eval_every: int = typer.Option(50, "--eval-every", help="Held-out accuracy every N steps."),
    checkpoint_every: int = pairs.CHECKPOINT_EVERY,
    keep_checkpoints: int = pairs.KEEP_CHECKPOINTS,
    resume: bool = pairs.RESUME,
    fresh: bool = pairs.FRESH,
    progress: bool = pairs.PROGRESS,
    seed: int = typer.Option(0, "--seed", help="Seed of the head's init and the batch order."),
    threads: int | None = pairs.THREADS,
) -> None:
    """Train a reward model on preference pairs; report held-out pairwise accuracy before and after."""
    flags = dict(locals())  # every flag, taken before the imports below add local names
    from lmforge.train.post.reward_train import RewardConfig, train_reward_model

    cfg = RewardConfig(**flags)
    train_reward_model(cfg, log=typer.echo)  # its last line gives the held-out accuracy, the model and the report
