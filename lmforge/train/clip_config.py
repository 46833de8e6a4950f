"""The knobs of `lmforge clip` (contrastive pretraining of a tiny CLIP on drawn images), declared once: the CLI's
flags are generated from this class. No torch here, so a wrong flag is answered before torch loads."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import setting
from lmforge.common.errors import ConfigError
from lmforge.train.config_sections import check_device, check_ints, device_setting

N_CLASSES = 20  # 4 shapes x 5 colours (data/drawn_images.py)


@dataclass(frozen=True)
class ClipTrainConfig:
    out: str = setting("runs/clip", "Run directory (model/ as a Hugging Face CLIP dir, log.jsonl, summary.json).",
                       short="-o")
    steps: int = setting(2500, "Optimizer steps (the defaults reach 97.5% held-out zero-shot accuracy).")
    batch_size: int = setting(20, "Distinct shape x colour classes per contrastive batch (2-20).", short="-b")
    lr: float = setting(1e-3, "Peak learning rate (20-step warmup, then cosine decay).")
    loss: str = setting("infonce", "infonce (CLIP: softmax over the batch) | sigmoid (SigLIP: pairwise).")
    image_size: int = setting(16, "Side of the drawn images in pixels.")
    patch_size: int = setting(4, "ViT patch side in pixels (divides image_size).")
    dim: int = setting(64, "Width of both towers and of the shared embedding.")
    layers: int = setting(2, "Layers per tower.")
    heads: int = setting(4, "Attention heads per layer.")
    train_per_class: int = setting(200, "Training images drawn per class.")
    test_per_class: int = setting(10, "Held-out images drawn per class (a different seed).")
    seed: int = setting(0, "Seed of the drawings, the initialisation and the batches.")
    threads: int = setting(1, "torch CPU threads: 1 is fastest for these tiny towers (0: torch's default).")
    device: str = device_setting()

    def __post_init__(self):
        check_device(self)
        check_ints(self, 1, "steps", "batch_size", "image_size", "patch_size", "dim", "layers", "heads",
                   "train_per_class", "test_per_class")
        if not 2 <= self.batch_size <= N_CLASSES:
            raise ConfigError(f"batch_size={self.batch_size} must be between 2 and {N_CLASSES} "
                              "(the distinct shape x colour classes a contrastive batch draws from)")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.dim % self.heads:
            raise ConfigError(f"dim={self.dim} must be a multiple of heads={self.heads}")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be positive")
        if self.loss not in ("infonce", "sigmoid"):
            raise ConfigError(f"loss {self.loss!r} is not supported; supported: infonce, sigmoid")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads={self.threads!r} must be 0 (torch's default) or a positive integer")
