"""SpeedrunConfig: the knobs of `lmforge speedrun` (nanochat's speedrun on a laptop: tokenizer -> pretrain -> SFT ->
DPO -> eval -> report card) as one frozen, validated dataclass, loadable from a recipe TOML. A size left unset takes
the recipe's value (`default`: minutes on 2 cores; `--tiny`: seconds, for tests and a first look). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.common.config_fields import setting
from lmforge.common.config_io import ConfigIO
from lmforge.common.errors import ConfigError
from lmforge.train.config_sections import check_device, check_ints, device_setting

# The sizes of each recipe. default: the 1M-parameter model of tests/pretrained_tiny.py and the SFT of
# docs/benchmarks.md (300 steps, batch 16, lr 3e-3, seq 128: held-out exact match 0.00 -> 0.60); DPO at lr 1e-4 (at
# 3e-4 it took the SFT model's instruction exact match from 0.43 to 0.14, at 1e-4 to 0.30; docs/evaluation.md).
RECIPES: dict[str, dict] = {
    "default": dict(preset="pretrain-1m", corpus_documents=12_000, vocab_size=2048, seq_len=128, val_fraction=0.01,
                    batch_size=16, pretrain_steps=600, pretrain_lr=3e-3, sft_steps=300, sft_lr=3e-3, sft_examples=4000,
                    dpo_steps=60, dpo_lr=1e-4, dpo_beta=0.1, train_pairs=1000, eval_examples=100,
                    heldout_pairs=200, tasks=("lmforge_mc",), task_limit=None),
    "tiny": dict(preset="tiny-llama", corpus_documents=300, vocab_size=320, seq_len=64, val_fraction=0.05, batch_size=4,
                 pretrain_steps=8, pretrain_lr=3e-3, sft_steps=4, sft_lr=3e-3, sft_examples=40, dpo_steps=3,
                 dpo_lr=3e-4, dpo_beta=0.1, train_pairs=16, eval_examples=8, heldout_pairs=8, tasks=(),
                 task_limit=4),
}

STAGES = ("tokenizer", "pretrain", "sft", "dpo", "eval", "report")


def stage_dir(out: Path, stage: str) -> Path:
    """OUT/1-tokenizer, OUT/2-pretrain, ...: each stage's own directory."""
    return Path(out) / f"{STAGES.index(stage) + 1}-{stage}"


@dataclass(frozen=True)
class SpeedrunConfig(ConfigIO):
    out: str = setting("runs/speedrun", "Run directory: one subdirectory per stage, report.md and the PNGs. Rerun "
                       "with the same --out to resume: finished stages are skipped.", short="-o")
    minutes: float = setting(12.0, "Time budget of the whole run: where a training step measured at the start says "
                             "the recipe's steps would not fit, pretraining (first) and the other stages get fewer; "
                             "the plan is kept in OUT/plan.json for reruns.")
    tiny: bool = setting(False, "The tiny recipe: a seconds-long smoke run (tiny model, a few steps per stage).")
    seed: int = setting(0, "Seed of the weights, the data order and the task generators.")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    # sizes: unset = the recipe's value (RECIPES)
    preset: str | None = setting(None, "Model preset (lmforge info lists them).")
    corpus_documents: int | None = setting(None, "Documents of the embedded corpus.")
    vocab_size: int | None = setting(None, "Byte-BPE vocabulary trained on the corpus.")
    seq_len: int | None = setting(None, "Tokens per training row (pretrain and SFT).")
    batch_size: int | None = setting(None, "Rows (or pairs) per step in every training stage.", short="-b")
    pretrain_steps: int | None = setting(None, "Pretraining steps (before the --minutes budget).")
    pretrain_lr: float | None = setting(None, "Pretraining peak learning rate.")
    sft_steps: int | None = setting(None, "SFT steps (before the --minutes budget).")
    sft_lr: float | None = setting(None, "SFT peak learning rate.")
    sft_examples: int | None = setting(None, "SFT training conversations (embedded instruction task).")
    dpo_steps: int | None = setting(None, "DPO steps (before the --minutes budget).")
    dpo_lr: float | None = setting(None, "DPO peak learning rate.")
    dpo_beta: float | None = setting(None, "DPO beta.")
    train_pairs: int | None = setting(None, "DPO training pairs (embedded preference task).")
    eval_examples: int | None = setting(None, "Held-out instruction conversations scored by exact match.")
    heldout_pairs: int | None = setting(None, "Held-out preference pairs scored by preference accuracy.")
    tasks: tuple[str, ...] | None = setting(None, "lm-eval task of the report card (repeatable; the project's or a "
                                            "YAML file), scored on every stage.", flag="--task")
    task_limit: int | None = setting(None, "Items per lm-eval task (default: all).")

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"SpeedrunConfig.minutes must be > 0, got {self.minutes!r}")
        check_ints(self, 0, "seed")
        check_device(self)
        if self.threads is not None:
            check_ints(self, 1, "threads")
        if isinstance(self.tasks, str | list):
            object.__setattr__(self, "tasks", (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks))
        for name in ("corpus_documents", "vocab_size", "seq_len", "batch_size", "pretrain_steps", "sft_steps",
                     "sft_examples", "dpo_steps", "train_pairs", "eval_examples", "heldout_pairs", "task_limit"):
            if getattr(self, name) is not None:
                check_ints(self, 1, name)
        for name in ("pretrain_lr", "sft_lr", "dpo_lr", "dpo_beta"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"SpeedrunConfig.{name} must be > 0, got {value!r}")
        if self.vocab_size is not None and self.vocab_size < 260:
            raise ConfigError(f"SpeedrunConfig.vocab_size={self.vocab_size}: a byte-level BPE needs >= 260 (256 "
                              f"bytes and the special tokens)")

    @property
    def recipe_name(self) -> str:
        return "tiny" if self.tiny else "default"

    def sizes(self) -> dict:
        """Every size of the run: the recipe's values, overridden by the ones set here."""
        base = RECIPES[self.recipe_name]
        out = {name: getattr(self, name) for name in base if getattr(self, name, None) is not None}
        return {**base, **out}

