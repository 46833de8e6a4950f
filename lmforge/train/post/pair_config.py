"""The configs of the preference-pair runs, `lmforge rm` (RewardConfig) and `lmforge dpo` (DPOConfig): the run, a
[data] section of pairs, and the sections every trainer shares (config_sections.py), each command with its own
defaults. Torch-free, so the CLI builds its flags from them without loading torch.
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
    check_between,
    check_device,
    check_ints,
    check_run,
    device_setting,
)
from lmforge.train.post.sft_config import AdapterConfig

LOSSES = ("dpo", "ipo", "cdpo", "simpo", "orpo")
DEFAULT_BETA = {"dpo": 0.1, "cdpo": 0.1, "ipo": 0.1, "simpo": 2.0, "orpo": 0.1}


@dataclass(frozen=True)
class PairDataConfig:
    """Preference pairs {prompt, chosen, rejected}: a JSONL file or the embedded preference task."""

    data: str | None = setting(None, "JSONL of {prompt, chosen, rejected} (default: the embedded preference task).")
    train_pairs: int = setting(2000, "Training pairs (at most).")
    heldout_pairs: int = setting(400, "Held-out pairs for the evaluation (at most).")
    task_seed: int = setting(0, "Seed of the embedded preference task.")
    max_len: int = setting(256, "Tokens per prompt + answer (the prompt's start is cut).")

    def __post_init__(self) -> None:
        check_ints(self, 1, "train_pairs", "heldout_pairs")
        check_ints(self, 0, "task_seed")
        check_ints(self, 8, "max_len")


@dataclass(frozen=True)
class PairRunConfig(ConfigIO):
    """What a reward-model and a DPO run share: the model, the run directory, resume, the pairs and the sections."""

    model: str = setting(help="Model to start from: an HF dir, a .gguf or smollm2-135m.", short="-m")
    out: str = setting("runs/pairs", "Run directory (metrics, curves, report).", short="-o")
    seed: int = setting(0, "Seed of the batch order (and of a reward head's init).")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    resume: bool = setting(False, "Continue from the newest checkpoint in --out (only corrupt ones: refused, see "
                           "--fresh).")
    fresh: bool = setting(False, "Start from step 0 even where --out holds checkpoints: they are moved aside to "
                          "checkpoints.old.")
    data: PairDataConfig = section(PairDataConfig)
    optim: OptimConfig = section(OptimConfig, lr=1e-3, weight_decay=0.0)
    schedule: ScheduleConfig = section(ScheduleConfig, max_steps=250, warmup_steps=20)
    batch: BatchConfig = section(BatchConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig, checkpoint_every=50)
    logging: LoggingConfig = section(LoggingConfig, log_every=1, eval_every=50)

    def __post_init__(self) -> None:
        check_run(self)
        check_device(self)


@dataclass(frozen=True)
class RewardConfig(PairRunConfig):
    """A scalar head on an LM backbone trained with the Bradley-Terry loss; the model goes to out/reward_model."""

    model: str = setting(help="Backbone to start from: an HF dir, a .gguf or smollm2-135m.", short="-m")
    out: str = setting("runs/rm", "Run directory (metrics, curves, report, reward_model/).", short="-o")


@dataclass(frozen=True)
class DPOConfig(PairRunConfig):
    """DPO (Rafailov et al. 2023), IPO, conservative DPO, SimPO or ORPO; the reference is the policy as loaded."""

    model: str = setting(help="Policy to start from (also the reference): an HF dir, a .gguf or smollm2-135m.",
                         short="-m")
    out: str = setting("runs/dpo", "Run directory (metrics, curves, report, hf/).", short="-o")
    optim: OptimConfig = section(OptimConfig, lr=3e-4, weight_decay=0.0)
    schedule: ScheduleConfig = section(ScheduleConfig, max_steps=150, warmup_steps=10)
    logging: LoggingConfig = section(LoggingConfig, log_every=1, eval_every=25)
    loss: str = setting("dpo", "dpo | ipo | cdpo | simpo | orpo.")
    beta: float | None = setting(None, "DPO/cDPO beta, IPO tau, SimPO reward scale (default 0.1; SimPO 2.0; unused "
                                 "by ORPO).")
    label_smoothing: float = setting(0.1, "cDPO: probability a label is flipped.")
    gamma: float = setting(1.0, "SimPO: target reward margin.")
    orpo_lambda: float = setting(0.1, "ORPO: weight of the odds-ratio term.")
    sft_weight: float = setting(0.0, "Add this times the chosen answer's NLL per token to the loss (RPO; TRL's "
                                "rpo_alpha): keeps the chosen answers likely, where DPO alone lowers both. 0: off.")
    export_hf: bool = setting(True, "Save the trained policy to out/hf (with LoRA: merged; the adapter in "
                              "out/adapter).")
    lora: AdapterConfig = section(AdapterConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} is not allowed; use one of {', '.join(LOSSES)}")
        if self.beta is not None and not self.beta > 0:
            raise ConfigError(f"beta={self.beta!r} must be > 0 (or unset for the loss's default)")
        check_between(self, "label_smoothing", 0, 0.5)
        check_between(self, "gamma", 0)
        check_between(self, "orpo_lambda", 0)
        check_between(self, "sft_weight", 0)
        if self.lora.base_bits:
            raise ConfigError(f"base_bits={self.lora.base_bits} is for `lmforge sft`; dpo trains LoRA over a float "
                              "base (base_bits 0)")

    @property
    def beta_value(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[self.loss]
