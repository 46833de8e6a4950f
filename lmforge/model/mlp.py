"""Feed-forward blocks: SwiGLU (Shazeer, 2020, "GLU Variants Improve Transformer") and the GPT-2 GELU MLP."""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.config import ModelConfig


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) — the Llama/Qwen MLP."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nn.Module):
    """down(gelu(up(x))) — the GPT-2 / BERT MLP."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


def make_mlp(cfg: ModelConfig) -> nn.Module:
    cls = SwiGLU if cfg.mlp == "swiglu" else GeluMLP
    return cls(cfg.dim, cfg.ffn_dim, bias=cfg.mlp_bias)
