"""QLoRA-style frozen quantized bases (Dettmers et al., 2023): gradients flow through an int8/int4 linear to its input.

PyTorch's weight-only kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) have no derivative, so the
backward pass is written here: dL/dx = dL/dy @ W with W dequantized on the fly (the weights themselves stay frozen).
Quantized layers LoRA does not wrap (e.g. an int8 lm_head) get the same backward through `make_differentiable`.
"""

import types

import torch
from torch import nn

from lmforge.model.quant import Int4Linear, Int8Linear

QUANTIZED_LINEARS = (Int8Linear, Int4Linear)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, QUANTIZED_LINEARS)


class _FrozenQuantizedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        ctx.module = module
        with torch.no_grad():
            return type(module).forward(module, x)  # the class's kernel call (the instance's may be ours)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        weight = ctx.module.dequantize().to(grad_y.dtype)  # [out, in]
        return grad_y @ weight, None


def frozen_quantized_linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x) for an Int8Linear / Int4Linear, differentiable with respect to x (never to the frozen weights)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return type(module).forward(module, x)
    return _FrozenQuantizedLinear.apply(x, module)


def _differentiable_forward(self, x: torch.Tensor) -> torch.Tensor:
    return frozen_quantized_linear(self, x)


def make_differentiable(model: nn.Module, skip: set[str] = frozenset()) -> None:
    """Let gradients reach the inputs of every quantized linear (except `skip` names), keeping its state names."""
    for name, module in model.named_modules():
        if is_quantized(module) and name not in skip:
            module.forward = types.MethodType(_differentiable_forward, module)  # instance-level: the class is shared
