"""One trainable module for `lmforge vlm`: a frozen vision tower, a frozen LLM, and one of the three interfaces
the issue compares — LLaVA's MLP projector (Liu et al., 2023: one visual token per patch), BLIP-2's Q-Former (Li et
al., 2023: a fixed number of learned queries) or Flamingo's gated cross-attention (Alayrac et al., 2022: no visual
tokens; text attends to the image inside the decoder). `trainable_groups` states what each stage trains.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.transformer import Transformer, float32_logits
from lmforge.model.vision.cross_attention import CrossAttentionAdapter
from lmforge.model.vision.projector import LlavaConfig, LlavaModel, MLPProjector, splice_image_features
from lmforge.model.vision.qformer import QFormer, QFormerConfig
from lmforge.model.vision.vit import VisionTransformer

FEATURE_LAYER = -2  # LLaVA reads the second-to-last layer of the tower, class token dropped


class VisionLanguageModel(nn.Module):
    """forward(ids [B, T], pixels [B, C, H, W], labels_mask [B, T] | None) -> logits at the masked positions.

    Every row has exactly one image; its placeholder run (tokens_per_image image tokens) holds the visual tokens.
    """

    def __init__(self, vision: VisionTransformer, lm: Transformer, interface: str, image_token_id: int, *,
                 qformer_queries: int = 8, cross_every: int = 6):
        super().__init__()
        self.interface, self.image_token_id = interface, image_token_id
        self.vision_tower, self.language_model = vision, lm
        vdim, dim = vision.config.dim, lm.config.dim
        if interface == "projector":
            self.multi_modal_projector = MLPProjector(vdim, dim)
        elif interface == "qformer":
            self.qformer = QFormer(QFormerConfig(dim=vdim, n_layers=2, n_heads=vision.config.n_heads,
                                                 ffn_dim=4 * vdim, encoder_dim=vdim, cross_attention_every=1,
                                                 n_queries=qformer_queries))
            self.qformer_projection = nn.Linear(vdim, dim)
        elif interface == "cross-attention":
            self.cross = CrossAttentionAdapter(lm, vdim, every=cross_every)
        else:
            raise LmforgeError(f"unknown interface {interface!r}")
        vision.requires_grad_(False)
        lm.requires_grad_(False)

    @property
    def tokens_per_image(self) -> int:
        if self.interface == "projector":
            return self.vision_tower.config.n_patches  # + class token - class token (dropped)
        return self.qformer.config.n_queries if self.interface == "qformer" else 0

    def interface_modules(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name not in ("vision_tower", "language_model")]

    @torch.no_grad()
    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen tower's second-to-last hidden states without the class token [B, n_patches, Dv]."""
        layer = FEATURE_LAYER % (self.vision_tower.config.n_layers + 1)
        return self.vision_tower.hidden_states(pixels, upto=layer)[layer][:, 1:]

    def visual_tokens(self, features: torch.Tensor) -> torch.Tensor:
        if self.interface == "projector":
            return self.multi_modal_projector(features)
        return self.qformer_projection(self.qformer(features))

    def hidden_states(self, ids: torch.Tensor, pixels: torch.Tensor, attention_mask=None, kv_cache=None,
                      features: torch.Tensor | None = None) -> torch.Tensor:
        """The LLM's final hidden states with the images in; `features` (patch_features) may be passed in so a
        decode step reuses the prefill's."""
        features = self.patch_features(pixels) if features is None else features
        lm = self.language_model
        if self.interface == "cross-attention":
            with self.cross.images(features):
                return lm.hidden_states(ids, attention_mask, kv_cache=kv_cache)
        if kv_cache is not None and kv_cache.length:  # decoding after the prefill: text tokens only
            return lm.hidden_states(ids, attention_mask, kv_cache=kv_cache)
        embeds = splice_image_features(lm.embed(ids), ids, self.visual_tokens(features), self.image_token_id)
        return lm.hidden_states(ids, attention_mask, kv_cache=kv_cache, inputs_embeds=embeds)

    def forward(self, ids: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits at the positions `where` [B, T] marks (all positions when None)."""
        h = self.hidden_states(ids, pixels)
        return float32_logits(self.language_model.lm_head, h if where is None else h[where])

    def to_llava(self) -> LlavaModel:
        """The projector model as a LlavaModel sharing these weights (formats/hf_llava.save_llava writes it)."""
        if self.interface != "projector":
            raise LmforgeError(f"only the projector interface is a LLaVA model; this one is {self.interface!r}")
        cfg = LlavaConfig(vision=self.vision_tower.config, text=self.language_model.config,
                          image_token_id=self.image_token_id, feature_layer=FEATURE_LAYER, feature_select="default",
                          projector_act="gelu", projector_bias=True)
        with torch.device("meta"):
            llava = LlavaModel(cfg)
        llava.vision_tower, llava.multi_modal_projector = self.vision_tower, self.multi_modal_projector
        llava.language_model = self.language_model
        return llava.eval()


def count_parameters(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
