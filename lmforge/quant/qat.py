"""Quantization-aware training: fake quantization with a straight-through estimator (Bengio et al., 2013).

The forward pass uses the weights rounded exactly as `quantize_model` will round them (int8 per channel or int4
per group), so training sees the quantization error; the backward pass treats the rounding as the identity, so
gradients flow to the float weights. `enable_qat` switches it on in place, `convert_qat` produces the real
Int8Linear / Int4Linear modules. A trainer only calls these two functions (model layer: no engine import).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.quant.int_linear import (
    QuantConfig,
    check_group_size,
    dequantize_int4,
    dequantize_int8,
    quantizable_linears,
    quantize_int4,
    quantize_int8,
    quantized_linear,
    set_submodule,
)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """w rounded to its int8 / int4 grid and mapped back to floats (no gradient)."""
    with torch.no_grad():
        if bits == 8:
            return dequantize_int8(*quantize_int8(w)).to(w.dtype)
        return dequantize_int4(*quantize_int4(w, group_size)).to(w.dtype)


def ste(w: torch.Tensor, w_quantized: torch.Tensor) -> torch.Tensor:
    """Forward: w_quantized. Backward: d/dw = identity (the straight-through estimator)."""
    return w + (w_quantized - w).detach()


class FakeQuantLinear(nn.Linear):
    """An nn.Linear whose forward uses fake-quantized weights; same parameters, same state-dict names."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bits: int = 8, group_size: int = 32):
        super().__init__(in_features, out_features, bias=bias, device="meta")
        self.bits, self.group_size = bits, group_size

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int) -> "FakeQuantLinear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, bits, group_size)
        module.weight = linear.weight  # the same Parameter: optimiser state and weight tying survive
        module.bias = linear.bias
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = ste(self.weight, fake_quantize(self.weight, self.bits, self.group_size))
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        group = f"/g{self.group_size}" if self.bits == 4 else ""
        return super().extra_repr() + f", fake_quant=int{self.bits}{group}"


def enable_qat(model: nn.Module, bits: int = 8, group_size: int = 32, skip: tuple[str, ...] = (),
               head_bits: int = 8) -> nn.Module:
    """Swap every nn.Linear (but the `skip` fnmatch patterns) for a FakeQuantLinear sharing its parameters."""
    cfg = QuantConfig(bits=bits, group_size=group_size, skip=tuple(skip), head_bits=head_bits)
    check_group_size(model, cfg)
    for name, linear in quantizable_linears(model, cfg.skip):
        set_submodule(model, name, FakeQuantLinear.from_linear(linear, cfg.bits_for(name), group_size))
    model.qat_config = cfg
    return model


@torch.no_grad()
def convert_qat(model: nn.Module) -> nn.Module:
    """Replace every FakeQuantLinear by the real quantized module (same rounding), in place."""
    cfg: QuantConfig | None = getattr(model, "qat_config", None)
    if cfg is None:
        raise LmforgeError("convert_qat: the model has no QAT modules; call enable_qat first")
    for name, module in list(model.named_modules()):
        if isinstance(module, FakeQuantLinear):
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            plain.weight, plain.bias = module.weight, module.bias
            real = quantized_linear(plain, module.bits, module.group_size)
            set_submodule(model, name, real.to(module.weight.device))
    del model.qat_config
    model.quant_config = cfg
    return model
