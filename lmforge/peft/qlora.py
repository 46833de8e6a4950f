"""QLoRA-style frozen quantized bases (Dettmers et al., 2023): gradients flow through an int8/int4 linear to its input.

PyTorch's weight-only kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) have no derivative, so the
backward pass is written here: dL/dx = dL/dy @ W with W dequantized on the fly (the weights themselves stay frozen).
Quantized layers LoRA does not wrap (e.g. an int8 lm_head) get the same backward through `make_differentiable`.
"""

import types

import torch
from torch import nn

from lmforge.quant.int_linear import Int4Linear, Int8Linear

QUANTIZED_LINEARS = (Int8Linear, Int4Linear)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, QUANTIZED_LINEARS)


class _FrozenQuantizedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, method: str) -> torch.Tensor:
        ctx.module, ctx.x_dtype = module, x.dtype
        with torch.no_grad():  # the class's kernel call (the instance's may be ours)
            return getattr(type(module), method)(module, x)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        weight = ctx.module.dequantize().to(grad_y.dtype)  # [out, in]
        return (grad_y @ weight).to(ctx.x_dtype), None, None


def frozen_quantized_linear(module: nn.Module, x: torch.Tensor, method: str = "forward") -> torch.Tensor:
    """module(x) for an Int8Linear / Int4Linear (or its float32-output `float_logits`, method="float_logits"),
    differentiable with respect to x (never to the frozen weights)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return getattr(type(module), method)(module, x)
    return _FrozenQuantizedLinear.apply(x, module, method)


def _differentiable_forward(self, x: torch.Tensor) -> torch.Tensor:
    return frozen_quantized_linear(self, x)


def _differentiable_float_logits(self, x: torch.Tensor) -> torch.Tensor:
    return frozen_quantized_linear(self, x, "float_logits")  # an int8/int4 lm_head under QLoRA (float32 logits)


def make_differentiable(model: nn.Module, skip: set[str] = frozenset()) -> None:
    """Let gradients reach the inputs of every quantized linear (except `skip` names), keeping its state names."""
    for name, module in model.named_modules():
        if is_quantized(module) and name not in skip:
            module.forward = types.MethodType(_differentiable_forward, module)  # instance-level: the class is shared
            module.float_logits = types.MethodType(_differentiable_float_logits, module)
