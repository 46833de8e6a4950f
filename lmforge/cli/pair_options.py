"""Flags `lmforge rm` and `lmforge dpo` share: the preference data and the Trainer run around it (checkpoints,
resume, gradient accumulation, progress). Each is a field of both RewardConfig and DPOConfig.
"""

from __future__ import annotations

import typer

DATA = typer.Option(None, "--data", help="JSONL of {prompt, chosen, rejected} (default: the embedded preference task).")
TRAIN_PAIRS = typer.Option(2000, "--train-pairs", help="Training pairs (at most).")
TASK_SEED = typer.Option(0, "--task-seed", help="Seed of the embedded preference task.")
MAX_LEN = typer.Option(256, "--max-len", help="Tokens per prompt + answer (the prompt's start is cut).")
BATCH_SIZE = typer.Option(16, "--batch-size", "-b", help="Pairs per micro-batch.")
GRAD_ACCUM = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step (the loss is the mean over the "
                          "step's pairs).")
WEIGHT_DECAY = typer.Option(0.0, "--weight-decay", help="AdamW weight decay of the matrices.")
GRAD_CLIP = typer.Option(1.0, "--grad-clip", help="Gradient norm clip (0: none).")
CHECKPOINT_EVERY = typer.Option(50, "--checkpoint-every", help="Checkpoint (OUT/checkpoints) every N steps and at "
                                "the end.")
KEEP_CHECKPOINTS = typer.Option(2, "--keep-checkpoints", help="Newest checkpoints kept.")
RESUME = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out (only corrupt ones: "
                      "refused, see --fresh).")
FRESH = typer.Option(False, "--fresh", help="Start from step 0 even where --out holds checkpoints: they are moved "
                     "aside to checkpoints.old.")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Progress: a bar with ETA on a terminal, step lines "
                        "elsewhere.")
THREADS = typer.Option(None, "--threads", help="torch CPU threads.")
