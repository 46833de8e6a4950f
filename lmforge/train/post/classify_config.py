"""The config of `lmforge classify train` (ClassifyConfig): the backbone, the task (sequence or token
classification), a [data] section of labelled examples and the sections every trainer shares
(config_sections.py). Torch-free, so the CLI builds its flags from it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import section, setting
from lmforge.common.config_io import ConfigIO
from lmforge.common.errors import ConfigError
from lmforge.train.config_sections import (
    BatchConfig,
    CheckpointConfig,
    LoggingConfig,
    OptimConfig,
    ScheduleConfig,
    check_device,
    check_ints,
    check_run,
    device_setting,
)

TASKS = ("sequence", "token")


@dataclass(frozen=True)
class ClassifyDataConfig:
    """Labelled examples: a JSONL file or the embedded set of the task."""

    data: str | None = setting(None, "JSONL: {\"text\", \"label\"} a line (--task sequence) or {\"tokens\": [words], "
                               "\"tags\": [BIO tags]} (--task token); default: the embedded review-sentiment / "
                               "entity set.")
    heldout: str | None = setting(None, "Held-out JSONL for the before/after figures (default: about 1 line in 5 "
                                  "of --data, by a hash of the line).")
    train_examples: int = setting(2000, "Training examples (at most).")
    heldout_examples: int = setting(200, "Held-out examples (at most).")
    task_seed: int = setting(0, "Seed of the embedded set.")
    max_len: int = setting(64, "Tokens per example (longer ones are cut).")

    def __post_init__(self) -> None:
        check_ints(self, 1, "train_examples", "heldout_examples")
        check_ints(self, 0, "task_seed")
        check_ints(self, 4, "max_len")
        if self.heldout is not None and self.data is None:
            raise ConfigError("--heldout goes with --data (the embedded set has its own held-out split)")


@dataclass(frozen=True)
class ClassifyConfig(ConfigIO):
    """A classification head on a loaded backbone (or a classifier directory to fine-tune further), trained with
    cross-entropy in the one Trainer loop; the classifier goes to OUT/hf as a transformers directory."""

    model: str = setting(help="Backbone: an HF directory (an LM, a BERT encoder, or a *ForSequenceClassification / "
                         "*ForTokenClassification to train further), a .gguf or smollm2-135m.", short="-m")
    task: str = setting("sequence", "sequence: one label per text | token: one tag per word (NER).")
    out: str = setting("runs/classify", "Run directory (metrics, curves, report, hf/).", short="-o")
    seed: int = setting(0, "Seed of the batch order and of the head's init.")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    resume: bool = setting(False, "Continue from the newest checkpoint in --out (only corrupt ones: refused, see "
                           "--fresh).")
    fresh: bool = setting(False, "Start from step 0 even where --out holds checkpoints: they are moved aside to "
                          "checkpoints.old.")
    export_hf: bool = setting(True, "Save the classifier to OUT/hf (transformers loads it).")
    data: ClassifyDataConfig = section(ClassifyDataConfig)
    optim: OptimConfig = section(OptimConfig, lr=1e-3, weight_decay=0.0)
    schedule: ScheduleConfig = section(ScheduleConfig, max_steps=200, warmup_steps=10)
    batch: BatchConfig = section(BatchConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig, checkpoint_every=50)
    logging: LoggingConfig = section(LoggingConfig, log_every=1, eval_every=50)

    def __post_init__(self) -> None:
        check_run(self)
        check_device(self)
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r} is not allowed; use one of {', '.join(TASKS)}")
