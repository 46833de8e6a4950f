"""CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision"): two towers.

A ViT image tower and a causal text tower, each projected to a shared space and L2-normalised; similarity logits are
scaled by exp(logit_scale). Trained with the symmetric InfoNCE loss (CLIP) or the pairwise sigmoid loss (Zhai et al.,
2023, "Sigmoid Loss for Language Image Pre-Training", SigLIP: + logit_bias, no softmax over the batch).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError
from lmforge.model.vision.vit import VISION_ACTIVATIONS, Encoder, VisionTransformer, ViTConfig, causal_padding_mask


@dataclass(frozen=True)
class TextTowerConfig:
    """CLIP's text tower: learned positions, causal pre-norm layers, pooled at the end-of-text token."""

    vocab_size: int = 49408
    max_positions: int = 77
    dim: int = 512
    n_layers: int = 12
    n_heads: int = 8
    ffn_dim: int = 2048
    act: str = "quick_gelu"
    eps: float = 1e-5
    eos_token_id: int = 2  # 2 (old CLIP configs): pool at the highest token id; else at the first eos token

    def __post_init__(self):
        for name in ("vocab_size", "max_positions", "dim", "n_layers", "n_heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"text tower {name}={value!r} must be a positive integer")
        if self.dim % self.n_heads:
            raise ConfigError(f"text tower dim={self.dim} must be a multiple of n_heads={self.n_heads}")
        if self.act not in VISION_ACTIVATIONS:
            raise ConfigError(f"activation {self.act!r} is not supported; supported: {', '.join(VISION_ACTIVATIONS)}")


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] > self.position_embedding.num_embeddings:
            raise ValueError(f"text of {ids.shape[-1]} tokens is longer than the tower's "
                             f"max_positions={self.position_embedding.num_embeddings}")
        return self.token_embedding(ids) + self.position_embedding.weight[:ids.shape[-1]]


class TextTransformer(nn.Module):
    """forward(ids, attention_mask) -> (last hidden states [B, T, D] after the final norm, pooled [B, D])."""

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg.n_layers, cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.act, cfg.eps)
        self.final_layer_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x = self.embeddings(ids)
        mask = causal_padding_mask(attention_mask, ids.shape[1], x.dtype)
        x = self.final_layer_norm(self.encoder(x, mask, is_causal=True)[-1])
        eos = self.config.eos_token_id
        pool_at = ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)
        return x, x[torch.arange(x.shape[0], device=x.device), pool_at]


@dataclass(frozen=True)
class CLIPConfig:
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    vision: ViTConfig = field(default_factory=ViTConfig)
    projection_dim: int = 512
    logit_scale_init: float = 2.6592  # log(1 / 0.07)
    loss: str = "infonce"  # or "sigmoid" (SigLIP; adds a learned logit_bias)
    logit_bias_init: float = -10.0

    def __post_init__(self):
        if self.loss not in ("infonce", "sigmoid"):
            raise ConfigError(f"contrastive loss {self.loss!r} is not supported; supported: infonce, sigmoid")
        if not isinstance(self.projection_dim, int) or self.projection_dim <= 0:
            raise ConfigError(f"projection_dim={self.projection_dim!r} must be a positive integer")


def infonce_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: caption i matches image i, over the batch in both directions."""
    target = torch.arange(len(logits_per_text), device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


def sigmoid_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """SigLIP: every (text, image) pair is a binary problem, +1 on the diagonal, -1 elsewhere; summed per text."""
    signs = 2 * torch.eye(len(logits_per_text), device=logits_per_text.device) - 1
    return -F.logsigmoid(signs * logits_per_text).sum(-1).mean()


class CLIPModel(nn.Module):
    """The two towers, their projections and the learned temperature (names as transformers' CLIPModel)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.config = cfg
        self.text_model = TextTransformer(cfg.text)
        self.vision_model = VisionTransformer(cfg.vision)
        self.visual_projection = nn.Linear(cfg.vision.dim, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.dim, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))
        if cfg.loss == "sigmoid":
            self.logit_bias = nn.Parameter(torch.tensor([cfg.logit_bias_init]))
        with torch.no_grad():
            for module in (self.text_model, self.visual_projection, self.text_projection):
                for p in module.parameters():
                    if p.dim() > 1:
                        nn.init.normal_(p, std=0.02)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected (not normalised) image embeddings [B, projection_dim]."""
        return self.visual_projection(self.vision_model(pixels)[1])

    def text_features(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.text_projection(self.text_model(ids, attention_mask)[1])

    def forward(self, ids: torch.Tensor, pixels: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """logits_per_text [n_texts, n_images] = scale * cos(text, image) (+ bias for sigmoid)."""
        text = F.normalize(self.text_features(ids, attention_mask), dim=-1)
        image = F.normalize(self.image_features(pixels), dim=-1)
        logits = text @ image.t() * self.logit_scale.exp()
        return logits + self.logit_bias if hasattr(self, "logit_bias") else logits

    def loss(self, logits_per_text: torch.Tensor) -> torch.Tensor:
        return sigmoid_loss(logits_per_text) if self.config.loss == "sigmoid" else infonce_loss(logits_per_text)
