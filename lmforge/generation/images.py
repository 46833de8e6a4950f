"""Images in a prompt (LLaVA, Liu et al., 2023, "Visual Instruction Tuning"): each image is a run of image tokens
in the prompt whose embeddings are the projected vision features, so the decode loop and the serving engine run the
language model on input embeddings at prefill and on plain tokens after. `ImageEncoder` is the vision half of a
loaded LLaVA directory; each image also gets a content hash (vLLM's mm_hash) that the paged KV cache mixes into its
block hashes, since every image's tokens have the same id: two different images never share cached keys/values.
"""

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.data.images import ImageProcessor, open_image
from lmforge.model.vision.projector import expand_image_tokens


@dataclass(frozen=True)
class PromptImages:
    """One prompt's images, encoded. `features` [n_images * tokens_per_image, D]: the visual tokens in the order
    of the prompt's image slots; `slots`: those prompt positions (ascending); `hashes`: one content hash per image."""

    features: torch.Tensor
    slots: tuple[int, ...]
    hashes: tuple[str, ...]
    tokens_per_image: int

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any visual token sits in prompt positions [start, end)."""
        return bool(self.slots) and start <= self.slots[-1] and end > self.slots[0]

    def in_range(self, start: int, end: int) -> tuple[tuple[str, int], ...]:
        """(hash, index of its first token here) of each image with visual tokens in positions [start, end): what a
        KV block covering those positions holds beyond its token ids."""
        first, last = bisect.bisect_left(self.slots, start), bisect.bisect_left(self.slots, end)
        out, k = [], first
        while k < last:
            image = k // self.tokens_per_image
            out.append((self.hashes[image], k - image * self.tokens_per_image))
            k = (image + 1) * self.tokens_per_image
        return tuple(out)

    def scatter(self, embeds: torch.Tensor, start: int, end: int, offset: int) -> None:
        """Write the visual tokens of prompt positions [start, end) into `embeds` [N, D] at `offset` + position -
        start (in place): the rows where those positions' tokens were embedded."""
        first, last = bisect.bisect_left(self.slots, start), bisect.bisect_left(self.slots, end)
        if first == last:
            return
        where = torch.tensor(self.slots[first:last], device=embeds.device) + (offset - start)
        embeds[where] = self.features[first:last].to(embeds.device, embeds.dtype)


def prompt_embeddings(model, ids: torch.Tensor, images: Sequence[PromptImages | None],
                      lengths: Sequence[int]) -> torch.Tensor:
    """The token embeddings of left-padded prompts ids [B, T] (row r's prompt: its last lengths[r] positions), each
    row's visual tokens written into its image slots: the `inputs_embeds` of a prefill with images."""
    embeds = model.embed(ids)
    for row, (row_images, length) in enumerate(zip(images, lengths, strict=True)):
        if row_images is not None:
            row_images.scatter(embeds[row], 0, length, ids.shape[1] - length)
    return embeds


def placeholder_char(texts: Sequence[str]) -> str:
    """A character of Unicode's private use area that none of `texts` holds, to stand for an image in a message
    (Tokenizer.apply_chat_template(placeholders=...) turns it into the image token). Taken from the top of the area;
    the chat encoder's own escapes come from its bottom."""
    used = set("".join(texts))
    mark = next((chr(c) for c in range(0xF8FF, 0xDFFF, -1) if chr(c) not in used), None)
    if mark is None:
        raise LmforgeError("the messages use every private-use character; none is left to mark an image")
    return mark


def default_processor(vision) -> ImageProcessor:
    """A tower's own preprocessing when its directory has no preprocessor_config.json: CLIP's resize + centre crop
    (OpenAI's mean/std), SigLIP's square resize (mean = std = 0.5), at the tower's image size."""
    size = vision.image_size
    if vision.kind == "siglip":
        return ImageProcessor.siglip(size)
    return ImageProcessor(shortest_edge=size, crop=(size, size))


class ImageEncoder:
    """The vision half of a LLaVA model (tower + projector) with its image processor and image token."""

    def __init__(self, llava, processor: ImageProcessor):
        self.llava, self.processor = llava, processor
        self.image_token_id = llava.config.image_token_id
        self.tokens_per_image = llava.config.tokens_per_image
        self.image_size = llava.config.vision.image_size

    @classmethod
    def from_lm(cls, lm) -> "ImageEncoder | None":
        """The encoder of a loaded LLaVA directory (lmforge.load), None for a text-only model."""
        llava = getattr(lm, "vision", None)
        if llava is None:
            return None
        pre = getattr(lm, "image_processor", None)
        return cls(llava, ImageProcessor.from_hf(pre) if pre else default_processor(llava.config.vision))

    def pixels(self, images) -> torch.Tensor:
        """pixel_values [n, 3, S, S] of Pillow images, in the size the tower takes."""
        pixels = self.processor(images)
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise LmforgeError(f"the image processor gives {pixels.shape[-2]}x{pixels.shape[-1]} pixels but the vision "
                               f"tower takes {self.image_size}x{self.image_size}: fix preprocessor_config.json")
        return pixels

    def open(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """pixel_values of image files (a one-line error for an unreadable or oversized file)."""
        return self.pixels([open_image(p) for p in paths])

    def expand(self, ids: Sequence[int]) -> list[int]:
        """Each image token repeated once per visual token (what the prompt must hold before `encode`)."""
        return expand_image_tokens(list(ids), self.image_token_id, self.tokens_per_image)

    def check(self, prompt_ids: Sequence[int], num_images: int) -> None:
        """Refuse a prompt whose image slots do not match its images (an image token typed as text, a cut prompt)."""
        slots = sum(1 for t in prompt_ids if t == self.image_token_id)
        if slots != num_images * self.tokens_per_image:
            raise LmforgeError(f"the prompt holds {slots} image token(s) but {num_images} image(s) need "
                               f"{num_images * self.tokens_per_image} ({self.tokens_per_image} each)")

    @torch.inference_mode()
    def encode(self, prompt_ids: Sequence[int], pixels: torch.Tensor) -> PromptImages:
        """Run the tower and the projector over `pixels` [n, 3, S, S] for a prompt with n expanded images."""
        if pixels.dim() != 4 or pixels.shape[0] < 1:
            raise LmforgeError(f"pixel_values must be [n_images, 3, H, W] with n_images >= 1, "
                               f"got {tuple(pixels.shape)}")
        self.check(prompt_ids, pixels.shape[0])
        weight = self.llava.multi_modal_projector.linear_1.weight
        features = self.llava.image_features(pixels.to(weight.device, weight.dtype))
        cpu = pixels.detach().to("cpu", torch.float32).contiguous()
        hashes = tuple(hashlib.blake2b(image.numpy().tobytes(), digest_size=16).hexdigest() for image in cpu)
        slots = tuple(i for i, t in enumerate(prompt_ids) if t == self.image_token_id)
        return PromptImages(features.flatten(0, 1), slots, hashes, self.tokens_per_image)
