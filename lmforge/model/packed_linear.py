"""Inference-only linears whose weight is packed once into oneDNN's blocked layout (as torch.compile's freezing
pass does): plain `F.linear` on a bf16 CPU weight reorders it on every call.

Measured on a 2-core Intel AMX CPU: a bf16 projection of SmolLM2's sizes took 2.2-2.7x less time packed at 1-32
rows (decode), 1.2-1.5x less at 256 rows; the results are bitwise those of `F.linear`, which runs the same oneDNN
kernel. fp32 is packed only on AMD CPUs, where F.linear's fp32 path (MKL) is the slow one: on a 2-core AMD EPYC
(Zen 4) packed fp32 projections took 1.2-2.6x less time at 32 rows; at one row the small ones (weights in cache)
were slower packed and the large ones 1.2-2.1x faster, and over a whole decode, weights streaming from memory,
SmolLM2 fp32 ran 1.35x faster (22.3 vs 16.6 tok/s, same tokens). On the Intel CPU packing fp32 measured slower at
one row. Packed fp32 differs from F.linear by float rounding only (~1e-5 relative). Training is left alone: the
weight changes every step. Which dtypes are packed is the backend table's choice (lmforge/kernels/backend_table.py);
the private torch ops packing needs are in lmforge/kernels/onednn.py.
"""

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.kernels import onednn
from lmforge.kernels.backend_table import Backend, Capability, detect_capability, select_backend


def packing_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """True when this torch build can pack `dtype` linears (bf16 or fp32; CPU with oneDNN, and bf16 support for
    bf16)."""
    return onednn.packing_available(dtype)


class PackedLinear(nn.Module):
    """y = x @ W.T (+ b) with W held only in oneDNN's packed layout. No gradient flows; the weight is not a
    parameter (it is not in the state dict: save the model before packing)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float32):
            raise LmforgeError(f"only bf16 or fp32 CPU linears can be packed, got {weight.dtype} on {weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = onednn.pack(weight)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn.linear(x, self.packed, self.bias)

    def weight_bytes(self) -> int:
        return self.in_features * self.out_features * self.packed.element_size() + \
            (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def default_packed_dtypes(capability: Capability | None = None) -> tuple[torch.dtype, ...]:
    """The dtypes the backend table gives to oneDNN where lmforge's kernels are absent: bf16 everywhere, fp32 on
    AMD CPUs, where it measured faster (see the module docstring)."""
    cap = (detect_capability(kernels=False) if capability is None else capability).without_kernels()
    return tuple(d for d in (torch.bfloat16, torch.float32) if select_backend(d, cap, (1, 2)) is Backend.ONEDNN)


def pack_linears(model: nn.Module, dtypes: tuple[torch.dtype, ...] | None = None) -> int:
    """Replace every CPU `nn.Linear` of `model` whose weight dtype is in `dtypes` (default: default_packed_dtypes())
    by a PackedLinear, in place; returns how many were packed (0 when packing is unavailable). For inference only:
    call it after any training or merge. A tied lm_head is packed too; the embedding keeps its own table."""
    dtypes = default_packed_dtypes() if dtypes is None else dtypes
    dtypes = tuple(d for d in dtypes if packing_available(d))
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is nn.Linear and module.weight.dtype in dtypes and module.weight.device.type == "cpu"
               and not (name == "lm_head" and module.weight.dtype != torch.float32)]  # bf16 out: float32_logits
    for name, module in targets:
        replace_module(model, name, PackedLinear(module))
    return len(targets)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where model.get_submodule(name) is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
