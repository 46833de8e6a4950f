"""The configs of `lmforge distill`, torch-free so the CLI builds its flags without loading torch: DistillConfig
(temperature, KL direction, mix with cross-entropy; Hinton et al. 2015) and DistillRunConfig, the student's
pretraining TrainConfig plus the teacher and a [distill] section.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import section, setting
from lmforge.common.errors import ConfigError
from lmforge.train.config import TrainConfig

KINDS = ("forward", "reverse")


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = setting(2.0, "Softmax temperature of both models.", short="-T")
    kind: str = setting("forward", "forward: KL(teacher||student) (mode-covering); reverse: KL(student||teacher) "
                        "(mode-seeking, as in MiniLLM).")
    alpha: float = setting(0.9, "Weight of the T^2-scaled KL; 1 - alpha weighs the cross-entropy on the data.")

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"DistillConfig.temperature must be > 0, got {self.temperature!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"DistillConfig.kind={self.kind!r}; allowed: {', '.join(KINDS)}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha!r}")


@dataclass(frozen=True, kw_only=True)
class DistillRunConfig(TrainConfig):
    """A distillation run: the student trains like a pretraining run (preset or model_config, data, optimizer ...)
    on the teacher's soft targets; data_dir shards must be packed with the teacher's tokenizer."""

    teacher: str = setting(help="Teacher: a run's hf/ dir, an HF dir, a .gguf, or smollm2-135m.")
    out: str = setting("runs/distill", "Run directory of the student.", short="-o")
    distill: DistillConfig = section(DistillConfig)

    def train_config(self) -> TrainConfig:
        """The student's pretraining view of this run (the Trainer's config)."""
        shared = {f: getattr(self, f) for f in TrainConfig.__dataclass_fields__}
        return TrainConfig(**shared)
