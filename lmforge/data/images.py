"""The image processor of CLIP / SigLIP / LLaVA vision towers: RGB -> resize -> centre crop -> rescale -> normalise.

Pixel for pixel what transformers' Pillow image processors do (CLIPImageProcessor: shortest edge to 224 with
bicubic, centre crop 224, mean/std of OpenAI CLIP; SigLIP: a fixed 224x224 bicubic resize, mean = std = 0.5), so a
tower gets the tensors it was trained on. Patchify (image -> patch tokens) is the tower's stride-p convolution.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lmforge.common.errors import ConfigError, LmforgeError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


@dataclass(frozen=True)
class ImageProcessor:
    """shortest_edge: resize so the short side is this (aspect kept); else resize to (height, width) exactly.
    crop: centre crop (height, width) after the resize, or None."""

    shortest_edge: int | None = 224
    height: int | None = None
    width: int | None = None
    crop: tuple[int, int] | None = (224, 224)
    resample: str = "bicubic"
    rescale: float = 1 / 255
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def __post_init__(self):
        if self.resample not in RESAMPLE:
            raise ConfigError(f"resample {self.resample!r} is not supported; supported: {', '.join(RESAMPLE)}")
        if self.shortest_edge is None and (self.height is None or self.width is None):
            raise ConfigError("an image processor needs shortest_edge, or both height and width")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} and std {self.std} need 3 values each (std > 0)")

    @classmethod
    def siglip(cls, size: int = 224) -> "ImageProcessor":
        return cls(shortest_edge=None, height=size, width=size, crop=None, resample="bicubic",
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    @classmethod
    def from_hf(cls, pre: dict) -> "ImageProcessor":
        """From a preprocessor_config.json dict (CLIPImageProcessor, SiglipImageProcessor keys)."""
        size = pre.get("size") or {"shortest_edge": 224}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = pre.get("crop_size") if pre.get("do_center_crop", False) else None
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        by_code = {v: k for k, v in RESAMPLE.items()}
        return cls(shortest_edge=size.get("shortest_edge"), height=size.get("height"), width=size.get("width"),
                   crop=(crop["height"], crop["width"]) if crop else None,
                   resample=by_code.get(pre.get("resample", 3), "bicubic"),
                   rescale=pre.get("rescale_factor", 1 / 255) if pre.get("do_rescale", True) else 1.0,
                   mean=tuple(pre.get("image_mean", CLIP_MEAN)) if pre.get("do_normalize", True) else (0.0,) * 3,
                   std=tuple(pre.get("image_std", CLIP_STD)) if pre.get("do_normalize", True) else (1.0,) * 3)

    def to_hf(self, processor_class: str = "CLIPImageProcessor") -> dict:
        size = {"shortest_edge": self.shortest_edge} if self.shortest_edge else {"height": self.height,
                                                                                 "width": self.width}
        out = {"image_processor_type": processor_class, "do_resize": True, "size": size,
               "resample": RESAMPLE[self.resample], "do_center_crop": self.crop is not None,
               "do_rescale": True, "rescale_factor": self.rescale, "do_normalize": True,
               "image_mean": list(self.mean), "image_std": list(self.std), "do_convert_rgb": True}
        if self.crop:
            out["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        return out

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step: transformers' rule, int() of the scaled long side."""
        if self.shortest_edge is None:
            return self.width, self.height
        short, long = sorted((width, height))
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def one(self, image: Image.Image) -> torch.Tensor:
        """A float32 [3, H, W] tensor from one Pillow image."""
        image = to_rgb(image)
        image = image.resize(self.resized_size(*image.size), resample=RESAMPLE[self.resample])
        pixels = np.asarray(image)
        if self.crop is not None:
            pixels = center_crop(pixels, *self.crop)
        pixels = pixels.astype(np.float32) * np.float32(self.rescale)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def __call__(self, images) -> torch.Tensor:
        """pixel_values [B, 3, H, W] for a list of Pillow images (or one)."""
        images = [images] if isinstance(images, Image.Image) else list(images)
        if not images:
            raise LmforgeError("no images to process")
        return torch.stack([self.one(im) for im in images])


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers does: transparent is not black)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    return image.convert("RGB")


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre (height, width) of an [H, W, C] array, zero-padded first where the image is smaller."""
    h, w = pixels.shape[:2]
    if h < height or w < width:
        ph, pw = max(height - h, 0), max(width - w, 0)
        pixels = np.pad(pixels, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = pixels.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return pixels[top:top + height, left:left + width]


def open_image(path: str | Path) -> Image.Image:
    """A Pillow image from a file; unreadable, truncated or decompression-bomb files are a one-line error."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise LmforgeError(f"cannot read image {path}: {err}") from None
