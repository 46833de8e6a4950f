"""Feed-forward blocks: gated GLU MLPs (Shazeer, 2020, "GLU Variants Improve Transformer": SwiGLU, GeGLU) and
the plain two-matrix MLP of GPT-2 / BERT (GELU, exact-erf GELU, ReLU)."""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.config import ModelConfig


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # GPT-2 and Gemma's "gelu_pytorch_tanh"


# mlp config value -> activation; BERT's "gelu" is the exact erf form (gelu_erf here).
ACTIVATIONS = {"swiglu": F.silu, "geglu": gelu_tanh, "gelu": gelu_tanh, "gelu_erf": F.gelu, "relu": F.relu}


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)) — the Llama/Qwen MLP with SiLU, Gemma's GeGLU with tanh-GELU."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, act=F.silu):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nn.Module):
    """down(act(up(x))) — the GPT-2 / BERT MLP (GELU by default, or exact GELU / ReLU)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, act=gelu_tanh):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


def make_mlp(cfg: ModelConfig) -> nn.Module:
    cls = SwiGLU if cfg.ffn.kind in ("swiglu", "geglu") else GeluMLP
    return cls(cfg.dim, cfg.ffn_dim, bias=cfg.ffn.bias, act=ACTIVATIONS[cfg.ffn.kind])
