"""Gated cross-attention layers (Alayrac et al., 2022, "Flamingo"): the third way to give an LLM images.

After chosen decoder blocks, text hidden states attend to image features: x + tanh(a) * attn(LN(x), image), then
x + tanh(b) * ffn(LN(x)). The gates a, b start at 0, so a freshly inserted layer leaves the pretrained LM exactly as
it was; training opens them. They attach to an lmforge Transformer with forward hooks: its own code is unchanged.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError


class GatedCrossAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, vision_dim: int, ffn_mult: int = 4):
        super().__init__()
        if dim % n_heads:
            raise LmforgeError(f"cross-attention dim={dim} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(vision_dim, 2 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim, bias=False), nn.GELU(),
                                 nn.Linear(ffn_mult * dim, dim, bias=False))
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, dim] text states; image [B, N, vision_dim] features (image_mask [B, N]: 1 = real)."""
        B, T, D = x.shape
        q = self.q_proj(self.norm(x)).view(B, T, self.n_heads, -1).transpose(1, 2)
        k, v = (t.view(B, image.shape[1], self.n_heads, -1).transpose(1, 2)
                for t in self.kv_proj(image.to(x.dtype)).chunk(2, dim=-1))
        mask = None if image_mask is None else image_mask.bool()[:, None, None, :]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T, D)
        x = x + torch.tanh(self.attn_gate) * self.out_proj(h)
        return x + torch.tanh(self.ffn_gate) * self.ffn(self.ffn_norm(x))


class CrossAttentionAdapter(nn.Module):
    """Gated cross-attention after every `every`-th block of `lm` (a Transformer). Use:

        adapter = CrossAttentionAdapter(lm, vision_dim=768, every=2)
        with adapter.images(features):   # [B, N, vision_dim]
            logits = lm(ids)
    Outside `images(...)` (or with images=None) the LM runs as if the adapter were not there.
    """

    def __init__(self, lm: nn.Module, vision_dim: int, every: int = 1, n_heads: int | None = None):
        super().__init__()
        if every <= 0:
            raise LmforgeError(f"cross-attention every={every} must be a positive number of layers")
        cfg = lm.config
        self.positions = list(range(every - 1, cfg.n_layers, every))
        self.cross = nn.ModuleList(GatedCrossAttention(cfg.dim, n_heads or cfg.n_heads, vision_dim)
                                   for _ in self.positions)
        self._image: tuple[torch.Tensor, torch.Tensor | None] | None = None
        for layer, cross in zip(self.positions, self.cross, strict=True):
            lm.layers[layer].register_forward_hook(self._hook(cross))

    def _hook(self, cross: GatedCrossAttention):
        def run(_module, _inputs, output):
            if self._image is None:
                return output
            image, mask = self._image
            if image.shape[0] != output.shape[0]:
                raise LmforgeError(f"{image.shape[0]} image feature rows for a batch of {output.shape[0]}")
            return cross(output, image, mask)
        return run

    @contextmanager
    def images(self, features: torch.Tensor | None, mask: torch.Tensor | None = None):
        self._image = None if features is None else (features, mask)
        try:
            yield self
        finally:
            self._image = None
