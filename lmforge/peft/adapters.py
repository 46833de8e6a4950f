"""Bottleneck adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP"): after the attention
and after the MLP of every block, h -> h + up(act(down(h))), a small residual MLP; the base model stays frozen.

`up` starts at zero, so the adapted model is exactly the base at init. Applied from outside: each block's `attn`
and `mlp` are wrapped (their own names move under `.inner`); `remove_adapters` restores the plain model.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.peft.lora import freeze

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


class BottleneckAdapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.act = ACTIVATIONS[activation]
        nn.init.normal_(self.down.weight, std=dim ** -0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at init
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class Adapted(nn.Module):
    """A sublayer (attention or MLP) followed by its adapter, called exactly like the sublayer."""

    def __init__(self, inner: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.inner, self.adapter = inner, adapter

    def forward(self, *args):
        return self.adapter(self.inner(*args))


def apply_adapters(model: nn.Module, bottleneck: int = 64, activation: str = "gelu") -> nn.Module:
    """Freeze the model and add an adapter after each block's attention and MLP, in place."""
    if bottleneck < 1:
        raise ConfigError(f"adapter bottleneck must be >= 1, got {bottleneck}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"adapter activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if adapter_modules(model):
        raise LmforgeError("the model already has adapters")
    freeze(model)
    dim = model.config.dim
    weight = model.embed.weight
    for block in model.layers:
        for name in ("attn", "mlp"):
            adapter = BottleneckAdapter(dim, bottleneck, activation).to(device=weight.device, dtype=weight.dtype)
            setattr(block, name, Adapted(getattr(block, name), adapter).train(block.training))
    return model


def adapter_modules(model: nn.Module) -> list[tuple[str, Adapted]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Adapted)]


def remove_adapters(model: nn.Module) -> nn.Module:
    """Unwrap every adapted sublayer (the adapters are dropped)."""
    for block in model.layers:
        for name in ("attn", "mlp"):
            module = getattr(block, name)
            if isinstance(module, Adapted):
                setattr(block, name, module.inner)
    return model
