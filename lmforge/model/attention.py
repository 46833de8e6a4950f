"""Causal self-attention with multi-head, grouped-query (Ainslie et al., 2023) and multi-query attention.

K/V heads are shared by groups of query heads; `F.scaled_dot_product_attention(enable_gqa=True)` does the
grouping without materialising repeated K/V. Optional q/k/v/o biases (Qwen2) and per-head QK RMSNorm (Qwen3).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.norms import RMSNorm
from lmforge.model.rope import apply_rope


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim
        self.q_proj = nn.Linear(cfg.dim, self.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.dim, bias=cfg.o_bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if getattr(kv_cache, "paged", False):  # the serving engine's paged cache does the attention itself
            y = kv_cache.attend(self.layer_idx, q, k, v)
        else:
            if kv_cache is not None:
                k, v = kv_cache.update(self.layer_idx, k, v)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_kv_heads != self.n_heads
            )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
