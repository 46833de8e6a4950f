"""Multi-head latent attention (MLA; DeepSeek-AI, 2024, "DeepSeek-V2"), as DeepSeek-V2/V3 use it.

Keys and values are rebuilt from a small per-token latent c_kv (kv_lora_rank wide, RMS-normed) by kv_b_proj; RoPE
lives in a separate qk_rope_head_dim part whose key is shared by all heads. Only c_kv and that RoPE key are cached.
Two equal computations: `naive` decompresses K/V and runs SDPA per head; `absorbed` folds kv_b_proj's key
up-projection into the query and its value up-projection into the output, so attention runs against the latent
itself (cheaper when decoding one token against a long cache).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.attention_backend import SDPA, AttentionBackend
from lmforge.model.config import ModelConfig
from lmforge.model.norms import RMSNorm
from lmforge.model.rope import apply_rope

LATENT_NORM_EPS = 1e-6  # DeepSeek's q/kv latent RMSNorms use their default eps, not rms_norm_eps


def deinterleave(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


class MLAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.mode, self.interleave = layer_idx, cfg.attention.mla_mode, cfg.attention.rope_interleave
        self.n_heads, self.rank = cfg.n_heads, cfg.attention.kv_lora_rank
        att = cfg.attention
        self.nope, self.rope, self.v_dim = att.qk_nope_head_dim, att.qk_rope_head_dim, att.v_head_dim
        q_out = self.n_heads * (self.nope + self.rope)
        if cfg.attention.q_lora_rank is None:
            self.q_proj = nn.Linear(cfg.dim, q_out, bias=False)
        else:
            self.q_a_proj = nn.Linear(cfg.dim, cfg.attention.q_lora_rank, bias=cfg.attention.qkv_bias)
            self.q_a_norm = RMSNorm(cfg.attention.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(cfg.attention.q_lora_rank, q_out, bias=False)
        self.kv_a_proj = nn.Linear(cfg.dim, self.rank + self.rope, bias=cfg.attention.qkv_bias)
        self.kv_a_norm = RMSNorm(self.rank, LATENT_NORM_EPS)
        self.kv_b_proj = nn.Linear(self.rank, self.n_heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.v_dim, cfg.dim, bias=cfg.attention.o_bias)
        self.scale = (self.nope + self.rope) ** -0.5  # transformers' softmax scale without YaRN's mscale

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_nope [B, H, T, nope], q_rope [B, H, T, rope]) before RoPE."""
        B, T, _ = x.shape
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        q = q.view(B, T, self.n_heads, self.nope + self.rope).transpose(1, 2)
        return q.split([self.nope, self.rope], dim=-1)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, backend: AttentionBackend = SDPA, q_scale: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q_nope, q_rope = self.query(x)
        if q_scale is not None:  # LogN attention scaling [B, 1, T, 1]
            q_nope, q_rope = q_nope * q_scale.to(q_nope.dtype), q_rope * q_scale.to(q_rope.dtype)
        latent, k_rope = self.kv_a_proj(x).split([self.rank, self.rope], dim=-1)
        latent = self.kv_a_norm(latent)  # [B, T, r]
        if self.interleave:  # pairs (x0, x1), (x2, x3)... -> halves (x0, x2, ...), (x1, x3, ...); q.k is unchanged
            q_rope, k_rope = deinterleave(q_rope), deinterleave(k_rope)
        q_rope = apply_rope(q_rope, cos, sin)
        k_rope = apply_rope(k_rope[:, None], cos, sin)[:, 0]  # [B, T, rope]: one RoPE key for every head
        y = backend.attend_latent(self.layer_idx, self, q_nope, q_rope, latent, k_rope, mask, is_causal)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.v_dim))  # y [B, H, T, v]

    def attention_path(self, decode: bool):
        """attend_absorbed in "absorbed" mode and, in "auto" mode, to decode (new tokens against cached ones, where
        it is cheaper); attend_naive otherwise. Backends call it with the entries they stored."""
        absorbed = self.mode == "absorbed" or (self.mode == "auto" and decode)
        return self.attend_absorbed if absorbed else self.attend_naive

    def attend_naive(self, q_nope, q_rope, latent, k_rope, mask, is_causal):
        """Decompress per-head K/V from the latent [B, S, r], then standard SDPA."""
        B, S, _ = latent.shape
        kv = self.kv_b_proj(latent).view(B, S, self.n_heads, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_rope[:, None].expand(B, self.n_heads, S, self.rope)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale)

    def attend_absorbed(self, q_nope, q_rope, latent, k_rope, mask, is_causal):
        """q_nope . (W_uk c) = (W_uk^T q_nope) . c, and sum_s p_s W_uv c_s = W_uv (sum_s p_s c_s):
        attention with one shared 'head' of keys [c; k_rope] and values c, up-projected afterwards."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.nope + self.v_dim, self.rank)
        w_uk, w_uv = w[:, :self.nope], w[:, self.nope:]  # [H, nope, r], [H, v, r]
        q = torch.cat([torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk), q_rope], dim=-1)  # [B, H, T, r + rope]
        k = torch.cat([latent, k_rope], dim=-1)[:, None]  # [B, 1, S, r + rope]
        y = F.scaled_dot_product_attention(q, k, latent[:, None], attn_mask=mask, is_causal=is_causal,
                                           scale=self.scale, enable_gqa=True)  # [B, H, T, r]
        return torch.einsum("bhtr,hvr->bhtv", y, w_uv)
