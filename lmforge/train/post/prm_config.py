"""The config of `lmforge prm train` (PRMConfig): a process reward model's run — the backbone, the run directory,
resume, a [data] section of step-labelled solutions (a JSONL file or the embedded multi-step additions) and the
sections every trainer shares. Torch-free, so the CLI builds its flags from it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import section, setting
from lmforge.train.config_sections import (
    BatchConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimConfig,
    ScheduleConfig,
    check_ints,
)
from lmforge.train.post.pair_config import PairRunConfig


@dataclass(frozen=True)
class StepDataConfig:
    """Step-labelled solutions {prompt, steps, labels}: a JSONL file or the embedded multi-step additions."""

    data: str | None = setting(None, "JSONL of {\"prompt\", \"steps\": [...], \"labels\": [1, 0, ...]} (default: the "
                               "embedded multi-step additions with planted errors).")
    heldout: str | None = setting(None, "Held-out JSONL (default: 20% of --data by a hash of the prompt).")
    train_solutions: int = setting(3000, "Training solutions (at most).")
    heldout_solutions: int = setting(300, "Held-out solutions for the evaluation (at most).")
    task_seed: int = setting(0, "Seed of the embedded task.")
    max_len: int = setting(128, "Tokens per prompt + steps (the prompt's start is cut).")
    outcome_labels: bool = setting(False, "Train an OUTCOME reward model with the same head and loss: one label per "
                                   "solution, its \"correct\" field (final answer right), read at its last step's "
                                   "end (Lightman et al.'s ORM baseline); the step labels are not used.")

    def __post_init__(self) -> None:
        check_ints(self, 1, "train_solutions", "heldout_solutions")
        check_ints(self, 0, "task_seed")
        check_ints(self, 8, "max_len")


@dataclass(frozen=True)
class PRMConfig(PairRunConfig):
    """A scalar head read at each step's end, trained with binary cross-entropy on the step labels; the model goes
    to out/prm (a reward-model directory: `load_prm`, best-of-N, dense rewards)."""

    model: str = setting(help="Backbone to start from: an HF dir, a .gguf or smollm2-135m.", short="-m")
    out: str = setting("runs/prm", "Run directory (metrics, curves, report, prm/).", short="-o")
    step_surprisal: bool = setting(False, "Also read the backbone's own surprise at each step's tokens (a learned "
                                   "gate over log p(token), added to the head's logit: prm_surprisal.py).")
    data: StepDataConfig = section(StepDataConfig)
    optim: OptimConfig = section(OptimConfig, lr=1e-3, weight_decay=0.0)
    schedule: ScheduleConfig = section(ScheduleConfig, max_steps=300, warmup_steps=20)
    batch: BatchConfig = section(BatchConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig, checkpoint_every=100)
    logging: LoggingConfig = section(LoggingConfig, log_every=1, eval_every=100)
