"""Absolute position embeddings and LogN attention scaling.

Sinusoidal (Vaswani et al., 2017, "Attention Is All You Need") and learned (GPT-2, BERT) position vectors are
added to the token embeddings; LogN scaling (Qwen's logn-attn, after Chiang & Cholak 2022) multiplies queries by
log_{train_len}(position) beyond the training length, so attention entropy stays put as the context grows.
"""

import math

import torch


def sinusoidal_embedding(positions: torch.Tensor, dim: int, dtype: torch.dtype, base: float = 10000.0) -> torch.Tensor:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)); [B, T] positions -> [B, T, dim]."""
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    angles = positions.to(torch.float32)[..., None] * inv_freq
    pe = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # interleave sin, cos
    return pe[..., :dim].to(dtype)


def logn_scale(positions: torch.Tensor, train_len: int) -> torch.Tensor:
    """Per-query factor [B, T]: log(p + 1) / log(train_len) where p + 1 > train_len, else 1 (Qwen's logn_list)."""
    length = positions.to(torch.float32) + 1
    return torch.where(length > train_len, length.log() / math.log(train_len), torch.ones_like(length))
