"""The Q-Former (Li et al., 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders").

A small BERT-style post-norm encoder over a fixed set of learned query vectors: every layer self-attends among the
queries, every `cross_attention_every`-th layer also cross-attends to the (frozen) image features, then a feed-
forward. Its output is `n_queries` visual tokens, whatever the image's patch count. Names follow transformers'
Blip2QFormerModel (query-only path: no text input).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError
from lmforge.model.vision.vit import VISION_ACTIVATIONS


@dataclass(frozen=True)
class QFormerConfig:
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    encoder_dim: int = 1408  # the image features' width
    cross_attention_every: int = 2
    act: str = "gelu"
    eps: float = 1e-12
    n_queries: int = 0  # >0: the module owns its learned queries (Blip2Model's query_tokens)

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "ffn_dim", "encoder_dim", "cross_attention_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Q-Former {name}={value!r} must be a positive integer")
        if self.dim % self.n_heads:
            raise ConfigError(f"Q-Former dim={self.dim} must be a multiple of n_heads={self.n_heads}")
        if self.act not in VISION_ACTIVATIONS:
            raise ConfigError(f"activation {self.act!r} is not supported; supported: {', '.join(VISION_ACTIVATIONS)}")


class QFormerAttentionCore(nn.Module):
    """query from the queries; key/value from the queries (self) or the image features (cross)."""

    def __init__(self, cfg: QFormerConfig, kv_dim: int):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(kv_dim, cfg.dim)
        self.value = nn.Linear(kv_dim, cfg.dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q = self.query(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        k, v = (p(context).view(B, context.shape[1], self.n_heads, -1).transpose(1, 2) for p in (self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T, D)


class DenseNorm(nn.Module):
    """BERT's output sublayer: LayerNorm(dense(h) + residual)."""

    def __init__(self, in_dim: int, dim: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class QFormerAttention(nn.Module):
    def __init__(self, cfg: QFormerConfig, kv_dim: int):
        super().__init__()
        self.attention = QFormerAttentionCore(cfg, kv_dim)
        self.output = DenseNorm(cfg.dim, cfg.dim, cfg.eps)

    def forward(self, x, context=None, mask=None):
        return self.output(self.attention(x, x if context is None else context, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.act = VISION_ACTIVATIONS[cfg.act]

    def forward(self, x):
        return self.act(self.dense(x))


class QFormerLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, index: int):
        super().__init__()
        self.attention = QFormerAttention(cfg, cfg.dim)
        if index % cfg.cross_attention_every == 0:
            self.crossattention = QFormerAttention(cfg, cfg.encoder_dim)
        self.intermediate_query = Intermediate(cfg)
        self.output_query = DenseNorm(cfg.ffn_dim, cfg.dim, cfg.eps)

    def forward(self, x, image, image_mask=None):
        x = self.attention(x)
        if hasattr(self, "crossattention"):
            x = self.crossattention(x, image, image_mask)
        return self.output_query(self.intermediate_query(x), x)


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, i) for i in range(cfg.n_layers))


class QFormer(nn.Module):
    """forward(image_features [B, N, encoder_dim], queries [B or 1, Q, dim] | None) -> [B, Q, dim]."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.config = cfg
        if cfg.n_queries:
            self.query_tokens = nn.Parameter(torch.randn(1, cfg.n_queries, cfg.dim) * 0.02)
        self.layernorm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.encoder = QFormerEncoder(cfg)

    def forward(self, image: torch.Tensor, queries: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """image_mask [B, N] (1 = a real feature) hides padded image features from cross-attention."""
        if queries is None:
            if not self.config.n_queries:
                raise ValueError("this Q-Former owns no queries (n_queries=0): pass queries")
            queries = self.query_tokens
        x = self.layernorm(queries.expand(image.shape[0], -1, -1))
        mask = None if image_mask is None else image_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, image.to(x.dtype), mask)
        return x
