"""Rotary position embedding (RoPE; Su et al., 2021, "RoFormer").

Pairs of channels (i, i + d/2) are rotated by angle position * theta^(-2i/d), the "rotate half" layout that
Hugging Face Llama/Qwen checkpoints use. The angles are computed from explicit positions in float32, so a
left-padded batch, a KV cache offset or packed sequences all get the right rotation.
"""

import torch


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """theta^(-2i/d) for i in [0, d/2): the rotation speed of each channel pair."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos and sin of shape [B, T, head_dim] for integer positions [B, T]."""
    freqs = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by the angles in cos/sin [B, T, D]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin
