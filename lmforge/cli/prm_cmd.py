"""`lmforge prm train | generate`: a process reward model (a score per reasoning step) trained on step-labelled
solutions, and the project's step-wise task with planted errors written as JSONL. Thin: train's flags are generated
from PRMConfig; the work is in lmforge/train/post/prm*.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.common.errors import LmforgeError
from lmforge.train.post.prm_config import PRMConfig

app = typer.Typer(help="Process reward models (Lightman et al. 2023, Math-Shepherd): score every reasoning step; "
                  "train one on step-labelled solutions, write the embedded step-wise task.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def _train(cfg: PRMConfig) -> None:
    from lmforge.train.post.prm_train import train_prm  # torch loads here, not at --help

    train_prm(cfg, log=typer.echo)


app.command("train", epilog=toml_epilog(PRMConfig))(config_command(
    PRMConfig, _train, name="train", doc="Train a process reward model on step-labelled solutions ({\"prompt\", "
    "\"steps\": [...], \"labels\": [1, 0, ...]} JSONL); report held-out step accuracy and error recall before and "
    "after; save OUT/prm. --outcome-labels trains the same head on one label per solution instead (its \"correct\" "
    "field): an outcome reward model to compare with."))


@app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Write the step-labelled JSONL here.", show_default=False),
    n: int = typer.Option(1000, "--n", help="Solutions to write."),
    split: str = typer.Option("train", "--split", help="train | heldout (disjoint problems)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the task."),
) -> None:
    """Write multi-step additions solved by a synthetic sampler with known error rates (forgotten carries, slips,
    and compensating slips that make the final answer right by accident); each step labelled 1 when its own
    arithmetic is right, and "correct" 1 when the final answer is (for `prm train --outcome-labels`)."""
    from lmforge.train.post.prm_data import step_solutions

    if n < 1:
        raise LmforgeError(f"--n must be >= 1, got {n}")
    if split not in ("train", "heldout"):
        raise LmforgeError(f"--split {split!r} is not allowed; use train or heldout")
    rows = step_solutions(n, split, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = ("prompt", "steps", "labels")
    out.write_text("".join(json.dumps({**{k: r[k] for k in keep}, "correct": int(r["correct"])}) + "\n" for r in rows))
    wrong = sum(0 in r["labels"] for r in rows)
    typer.echo(f"wrote {len(rows)} solutions ({wrong} with a wrong step) to {out}")
