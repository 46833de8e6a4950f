"""Inference-only linears whose bf16 weight is packed once into oneDNN's blocked layout (as torch.compile's freezing
pass does): plain `F.linear` on a bf16 CPU weight reorders it on every call.

Measured on the 2-core AMX CPU this project runs on: a bf16 projection of SmolLM2's sizes took 2.2-2.7x less time
packed at 1-32 rows (decode), 1.2-1.5x less at 256 rows; the results are bitwise those of `F.linear`, which runs
the same oneDNN kernel. fp32 is left alone (packing measured slower at one row), and so is training (the weight
changes every step).
"""

import torch
from torch import nn

from lmforge.common.errors import LmforgeError


def packing_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """True when this torch build can pack `dtype` linears (CPU with oneDNN and bf16 support)."""
    if dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        w = torch.ones(2, 2, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2, dtype=dtype), packed, None, "none", [], "")
        return bool(torch.equal(out, torch.full((1, 2), 2.0, dtype=dtype)))
    except (RuntimeError, AttributeError):  # a build without these private oneDNN ops
        return False


class PackedLinear(nn.Module):
    """y = x @ W.T (+ b) with W held only in oneDNN's packed layout. No gradient flows; the weight is not a
    parameter (it is not in the state dict: save the model before packing)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        if weight.device.type != "cpu" or weight.dtype != torch.bfloat16:
            raise LmforgeError(f"only bf16 CPU linears can be packed, got {weight.dtype} on {weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def weight_bytes(self) -> int:
        return self.in_features * self.out_features * 2 + (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(model: nn.Module) -> int:
    """Replace every bf16 CPU `nn.Linear` of `model` by a PackedLinear, in place; returns how many were packed
    (0 when packing is unavailable or nothing is bf16). For inference only: call it after any training or merge.
    A tied lm_head is packed too; the embedding keeps its own table."""
    if not packing_available():
        return 0
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is nn.Linear and module.weight.dtype == torch.bfloat16
               and module.weight.device.type == "cpu"]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PackedLinear(module))
    return len(targets)
