"""LLaVA (Liu et al., 2023, "Visual Instruction Tuning"): a vision tower, a 2-layer MLP projector, a decoder LM.

The prompt holds one image placeholder token per image; `expand_image_tokens` repeats it once per patch feature,
and the model swaps those token embeddings for the projected patch features (second-to-last ViT layer, class token
dropped) before the decoder runs: the LM sees an image as a run of "visual tokens". Rows without images are text.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.model.vision.vit import VISION_ACTIVATIONS, VisionTransformer, ViTConfig

PROJECTOR_ACTIVATIONS = {**VISION_ACTIVATIONS, "silu": F.silu, "relu": F.relu}
FEATURE_SELECT = ("default", "full")  # default: drop the first position (CLIP's class token); full: keep all


@dataclass(frozen=True)
class LlavaConfig:
    vision: ViTConfig
    text: ModelConfig
    image_token_id: int
    feature_layer: int = -2  # index into [embeddings, layer 1, ..., layer n] (transformers' hidden_states)
    feature_select: str = "default"
    projector_act: str = "gelu"
    projector_bias: bool = True

    def __post_init__(self):
        n = self.vision.n_layers
        if not -(n + 1) <= self.feature_layer <= n:
            raise ConfigError(f"vision feature_layer={self.feature_layer} is outside the tower's "
                              f"hidden states (-{n + 1}..{n})")
        if self.feature_select not in FEATURE_SELECT:
            raise ConfigError(f"feature_select {self.feature_select!r} is not supported; supported: "
                              f"{', '.join(FEATURE_SELECT)}")
        if self.projector_act not in PROJECTOR_ACTIVATIONS:
            raise ConfigError(f"projector activation {self.projector_act!r} is not supported; supported: "
                              f"{', '.join(PROJECTOR_ACTIVATIONS)}")
        if not 0 <= self.image_token_id < self.text.vocab_size:
            raise ConfigError(f"image_token_id={self.image_token_id} is outside the vocabulary "
                              f"(0..{self.text.vocab_size - 1})")

    @property
    def tokens_per_image(self) -> int:
        # "default" drops the first position whatever the tower (the class token of CLIP; transformers drops a
        # SigLIP tower's first patch too, which is why SigLIP LLaVA configs say "full")
        return self.vision.n_patches + (self.vision.kind == "clip") - (self.feature_select == "default")


class MLPProjector(nn.Module):
    """linear -> activation -> linear: vision features [.., Dv] into the LM's embedding space [.., D]."""

    def __init__(self, vision_dim: int, text_dim: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=bias)
        self.act = PROJECTOR_ACTIVATIONS[act]
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def expand_image_tokens(ids: list[int], image_token_id: int, tokens_per_image: int) -> list[int]:
    """Repeat each image placeholder `tokens_per_image` times: the prompt then has one slot per visual token."""
    out = []
    for token in ids:
        out.extend([token] * tokens_per_image if token == image_token_id else [token])
    return out


def splice_image_features(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor,
                          image_token_id: int) -> torch.Tensor:
    """Put image features [n_images, n_tokens, D] (in order) where `ids` [B, T] hold the image token."""
    slots = ids == image_token_id
    n_slots, n_features = int(slots.sum()), features.shape[0] * features.shape[1]
    if n_slots != n_features:
        raise LmforgeError(f"the prompt has {n_slots} image token(s) but the images give {n_features} features "
                           f"({features.shape[0]} image(s) x {features.shape[1]}): expand each image placeholder "
                           "with expand_image_tokens")
    return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))


class LlavaModel(nn.Module):
    """vision_tower + multi_modal_projector + language_model (an lmforge Transformer), transformers' names."""

    def __init__(self, cfg: LlavaConfig):
        super().__init__()
        self.config = cfg
        self.vision_tower = VisionTransformer(cfg.vision)
        self.multi_modal_projector = MLPProjector(cfg.vision.dim, cfg.text.dim, cfg.projector_act, cfg.projector_bias)
        self.language_model = Transformer(cfg.text)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens [n_images, tokens_per_image, D]."""
        layer = self.config.feature_layer % (self.config.vision.n_layers + 1)
        features = self.vision_tower.hidden_states(pixels, upto=layer)[layer]
        if self.config.feature_select == "default":
            features = features[:, 1:]
        return self.multi_modal_projector(features)

    def input_embeddings(self, ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with each image's visual tokens in its placeholder run; no images: the text path."""
        embeds = self.language_model.embed(ids)
        if pixels is None:
            if bool((ids == self.config.image_token_id).any()):
                raise LmforgeError("the prompt has image tokens but no images were given")
            return embeds
        return splice_image_features(embeds, ids, self.image_features(pixels), self.config.image_token_id)

    def forward(self, ids: torch.Tensor, pixels: torch.Tensor | None = None, attention_mask=None, **kwargs):
        """Logits [B, T, V]; a batch may mix rows with and without images (pixels: the images in row order)."""
        if pixels is None:  # text only: exactly the language model's own path
            return self.language_model(ids, attention_mask, **kwargs)
        return self.language_model(ids, attention_mask, inputs_embeds=self.input_embeddings(ids, pixels), **kwargs)
