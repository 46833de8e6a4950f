"""Normalisation layers: RMSNorm (Zhang & Sennrich, 2019), Gemma's (1 + w) RMSNorm and LayerNorm (Ba et al., 2016).

RMSNorm computes in float32 and casts back before the weight, exactly as Llama/Qwen reference code does,
so bf16 models match their reference implementations bit for bit in the normalisation.
"""

import torch
from torch import nn

from lmforge.common.errors import ConfigError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class GemmaRMSNorm(RMSNorm):
    """RMSNorm with weight stored as an offset from 1 (initialised to 0), multiplied in float32 as Gemma does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).type_as(x)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)


def add_and_norm(norm: nn.Module, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + h, norm(x + h)): a residual add and the norm that reads it; one kernel call where the norm has one
    (`add_forward`: model/inference.py's FusedRMSNorm)."""
    add_forward = getattr(norm, "add_forward", None)
    if add_forward is not None:
        return add_forward(x, h)
    x = x + h
    return x, norm(x)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "gemma_rmsnorm":
        return GemmaRMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ConfigError(f"unknown norm {kind!r}; valid: rmsnorm, layernorm, gemma_rmsnorm")
