"""The knobs of `lmforge vlm` (two-stage vision-language training on drawn scenes), declared once: the CLI's flags
are generated from this class. No torch here, so a wrong flag is answered before torch loads.

Stage 1 (alignment): the interface only, on captions; stage 2 (instruction tuning): the interface (+ LoRA on the
LLM with --lora-r) on visual questions. The vision tower and the LLM's own weights never train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.common.config_fields import setting
from lmforge.common.config_io import ConfigIO
from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.train.config_sections import check_device, check_ints, check_run, device_setting

INTERFACES = ("projector", "qformer", "cross-attention")
EMBEDDED = ("smollm2-135m", "smollm2-135m-instruct")  # formats/loader.py's EMBEDDED_NAMES (that module loads torch)
STAGES = ("1", "2", "1,2")
ANSWER_FORMAT = "Answer the question using a single word or phrase."  # LLaVA-1.5 (Liu et al., 2023b)


@dataclass(frozen=True)
class VlmConfig(ConfigIO):
    model: str = setting("smollm2-135m", "The LLM: smollm2-135m (embedded), an HF directory or a .gguf.", short="-m")
    vision: str | None = setting(None, "A CLIP directory from `lmforge clip` (its vision tower is used, frozen); "
                                 "default: train one first (clip-* settings, about 2 min on one core).")
    out: str = setting("runs/vlm", "Run directory: stage1/, stage2/ (metrics, checkpoints), hf/ (a LLaVA directory "
                       "when --interface projector), summary.json.", short="-o")
    interface: str = setting("projector", "How images reach the LLM: projector (LLaVA MLP, one visual token per "
                             "patch) | qformer (BLIP-2 learned queries) | cross-attention (Flamingo gated layers, "
                             "no visual tokens).")
    stages: str = setting("1,2", "Stages to run: 1,2 (align on captions, then instruction-tune on questions) | 1 | 2 "
                          "(one-stage: questions only).")
    stage1_steps: int = setting(40, "Stage 1 (captions) optimizer steps.")
    stage2_steps: int = setting(160, "Stage 2 (visual questions) optimizer steps.")
    batch_size: int = setting(8, "Examples (image + prompt + answer) per step.", short="-b")
    lr: float = setting(2e-3, "Peak learning rate of the interface (warmup, then cosine).")
    lora_r: int = setting(8, "Stage 2: LoRA rank on the LLM's attention (merged into the saved LLM); 0: the LLM "
                          "stays frozen in both stages.")
    lora_lr: float = setting(5e-4, "Peak learning rate of the LoRA weights.")
    answer_format: str = setting(ANSWER_FORMAT, "The response-format line after every visual question, "
                                 "trained and held-out (LLaVA-1.5's): one-word answers are asked for, not trained "
                                 "into the model's manner of answering; '' for none.")
    qformer_queries: int = setting(8, "Q-Former: learned queries (= visual tokens per image).")
    cross_every: int = setting(6, "Cross-attention: a gated layer after every N-th decoder block.")
    train_images: int = setting(600, "Training scenes (each gives a caption and 3-4 questions).")
    heldout_images: int = setting(30, "Held-out scenes (disjoint from training) for the exact-match figures.")
    clip_steps: int = setting(1500, "Without --vision: CLIP training steps.")
    clip_image_size: int = setting(32, "Without --vision: image side of the CLIP trained first (scenes are drawn "
                                   "at the tower's size).")
    clip_patch_size: int = setting(8, "Without --vision: its patch side (visual tokens = (image/patch)^2).")
    seed: int = setting(0, "Seed of the scenes, the initialisation and the batches.")
    threads: int | None = setting(None, "torch CPU threads (default: torch's).")
    device: str = device_setting()
    resume: bool = setting(False, "Continue each stage from its newest checkpoint in --out.")
    fresh: bool = setting(False, "Start over where --out holds checkpoints (they are moved aside).")
    progress: bool = setting(True, "Progress bar / lines.")

    def __post_init__(self) -> None:
        check_run(self)
        check_device(self)
        if self.interface not in INTERFACES:
            raise ConfigError(f"interface {self.interface!r} is not supported; supported: {', '.join(INTERFACES)}")
        if self.stages not in STAGES:
            raise ConfigError(f"stages {self.stages!r} is not allowed; allowed: {' | '.join(STAGES)}")
        check_ints(self, 1, "stage1_steps", "stage2_steps", "batch_size", "qformer_queries", "cross_every",
                   "train_images", "heldout_images", "clip_steps", "clip_image_size", "clip_patch_size")
        check_ints(self, 0, "lora_r")
        for name in ("lr", "lora_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be positive")
        if self.clip_image_size % (2 * self.clip_patch_size):
            raise ConfigError(f"clip_image_size={self.clip_image_size} must be a multiple of 2 x clip_patch_size="
                              f"{self.clip_patch_size} (a scene is a 2 x 2 grid of cells)")

    @property
    def stage_list(self) -> list[int]:
        return [int(s) for s in self.stages.split(",")]


def check_paths(cfg: VlmConfig) -> None:
    """The model and the vision directory exist: answered before torch loads (the CLI calls this first)."""
    if cfg.model not in EMBEDDED and not Path(cfg.model).exists():
        raise LmforgeError(f"--model {cfg.model}: no such directory or file (or use smollm2-135m)")
    if cfg.vision is not None and not (Path(cfg.vision) / "config.json").is_file():
        raise LmforgeError(f"--vision {cfg.vision}: not a CLIP directory (no config.json); train one with "
                           f"`lmforge clip --out DIR` and pass DIR/model")
