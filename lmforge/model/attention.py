"""Causal self-attention with multi-head, grouped-query (Ainslie et al., 2023) and multi-query attention.

K/V heads are shared by groups of query heads; `F.scaled_dot_product_attention(enable_gqa=True)` does the
grouping without materialising repeated K/V. Optional q/k/v/o biases (Qwen2) and per-head QK RMSNorm (Qwen3).
Where keys/values are stored and how attention runs over them is the backend's business (attention_backend.py).
"""

import torch
from torch import nn

from lmforge.model.attention_backend import SDPA, AttentionBackend
from lmforge.model.config import ModelConfig
from lmforge.model.norms import make_norm
from lmforge.model.rope import apply_rope


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim
        self.q_proj = nn.Linear(cfg.dim, self.n_heads * self.head_dim, bias=cfg.attention.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=cfg.attention.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=cfg.attention.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.dim, bias=cfg.attention.o_bias)
        qk_norm = "gemma_rmsnorm" if cfg.norms.kind == "gemma_rmsnorm" else "rmsnorm"
        self.q_norm = make_norm(qk_norm, self.head_dim, cfg.norms.eps) if cfg.attention.qk_norm else None
        self.k_norm = make_norm(qk_norm, self.head_dim, cfg.norms.eps) if cfg.attention.qk_norm else None
        # None = SDPA's 1/sqrt(head_dim); Gemma scales by query_pre_attn_scalar^-0.5 instead.
        self.scale = cfg.attention.query_pre_attn_scalar ** -0.5 if cfg.attention.query_pre_attn_scalar else None
        # For inference, model/inference.py may replace q/k/v_proj by one projection (qkv_proj), `rope` by a
        # kernel that rotates in place, and set `fused` to a kernel running the whole forward for the calls it takes
        # (a decode step: attention_kernel.py; None for the others); all compute what the code below computes.
        self.qkv_proj = None
        self.rope = apply_rope
        self.fused = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, backend: AttentionBackend = SDPA, q_scale: torch.Tensor | None = None) -> torch.Tensor:
        """cos/sin None: no RoPE (absolute or no positions); q_scale [B, 1, T, 1]: LogN factors for the queries."""
        if self.fused is not None and (y := self.fused(self, x, cos, sin, mask, backend, q_scale)) is not None:
            return y
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            q, k, v = self.qkv_proj(x).split([q_width, kv_width, kv_width], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cos is not None:
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if q_scale is not None:
            q = q * q_scale.to(q.dtype)
        y = backend.attend(self.layer_idx, q, k, v, mask, is_causal, self.scale)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
