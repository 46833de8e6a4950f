"""`lmforge rm`: train a reward model (a scalar head on an LM backbone, Bradley-Terry loss) on preference pairs.
Thin: every flag is a RewardConfig field.
"""

from __future__ import annotations

import typer


def rm_command(
    model: str = typer.Option(..., "--model", "-m", help="Backbone to start from: an HF dir, a .gguf or "
                              "smollm2-135m."),
    out: str = typer.Option("runs/rm", "--out", "-o", help="Run directory (metrics, curves, report, "
                            "reward_model/)."),
    data: str | None = typer.Option(None, "--data", help="JSONL of {prompt, chosen, rejected} (default: the "
                                    "embedded preference task)."),
    train_pairs: int = typer.Option(2000, "--train-pairs", help="Training pairs (at most)."),
    heldout_pairs: int = typer.Option(400, "--heldout-pairs", help="Held-out pairs for the accuracy (at most)."),
    task_seed: int = typer.Option(0, "--task-seed", help="Seed of the embedded preference task."),
    max_len: int = typer.Option(256, "--max-len", help="Tokens per prompt + answer (the prompt's start is cut)."),
    max_steps: int = typer.Option(250, "--max-steps", help="Optimizer steps."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Pairs per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup_steps: int = typer.Option(20, "--warmup-steps", help="Linear warmup steps."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay of the matrices."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clip (0: none)."),
    eval_every: int = typer.Option(50, "--eval-every", help="Held-out accuracy every N steps."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Checkpoint (out/checkpoints) every N "
                                         "steps and at the end."),
    keep_checkpoints: int = typer.Option(2, "--keep-checkpoints", help="Newest checkpoints kept."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out (only corrupt "
                                "ones: refused, see --fresh)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start from step 0 even where --out holds checkpoints: they "
                               "are moved aside to checkpoints.old."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress: a bar with ETA on a terminal, "
                                  "step lines elsewhere."),
    seed: int = typer.Option(0, "--seed", help="Seed of the head's init and the batch order."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
) -> None:
    """Train a reward model on preference pairs; report held-out pairwise accuracy before and after."""
    flags = dict(locals())  # every flag, taken before the imports below add local names
    from lmforge.train.post.reward_train import RewardConfig, train_reward_model

    cfg = RewardConfig(**flags)
    train_reward_model(cfg, log=typer.echo)  # its last line gives the held-out accuracy, the model and the report
