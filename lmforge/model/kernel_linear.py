"""lmforge's float linear kernels as modules (csrc/linear_bf16.cpp, csrc/linear_f32.cpp), and the fusion of several
linears into one: what `prepare_for_inference` (inference.py) gives a CPU model's projections.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.kernels import onednn


def fused_linear(linears: list[nn.Module]) -> nn.Module | None:
    """One linear computing the given ones side by side, or None when they cannot be fused. Quantized layers that
    know how (lmforge.quant's Int8Linear / Int4Linear: `concat_outputs`) give one quantized layer of their kind."""
    concat_outputs = getattr(type(linears[0]), "concat_outputs", None)
    if concat_outputs is not None:
        return concat_outputs(linears)
    if any(type(m) is not nn.Linear for m in linears):  # e.g. LoRA-wrapped: leave them alone
        return None
    first = linears[0].weight
    if any(m.weight.dtype != first.dtype or m.weight.device != first.device for m in linears) or \
            len({m.bias is None for m in linears}) > 1:
        return None
    fused = nn.Linear(first.shape[1], sum(m.out_features for m in linears), bias=linears[0].bias is not None,
                      device="meta")
    fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]), requires_grad=False)
    if linears[0].bias is not None:
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]), requires_grad=False)
    return fused


class KernelLinear(nn.Module):
    """A linear on lmforge's kernel, its weight packed once: bf16 by the AVX512-BF16 dot product
    (torch.ops.lmforge.linear_bf16, weight in pairs of input channels), float32 by FMA (linear_f32). Inference only;
    the weight is not a parameter (as with PackedLinear). With `prompt_rows`, calls of more rows run on oneDNN's
    packed linear instead (the backend table's rule for AMX CPUs), from a second copy of the weight."""

    gate_block = None  # gated: the outputs alternate this many gate and up rows in the oneDNN copy (None: halves)

    def __init__(self, linear: nn.Linear, ops, gated: bool = False, prompt_rows: int | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        if weight.dtype == torch.bfloat16:
            self.packed = ops.pack_linear_bf16(weight)
            self.kernel = ops.silu_gated_linear_bf16 if gated else ops.linear_bf16
        else:
            self.packed = ops.pack_linear_f32(weight, gated=gated)
            self.kernel = ops.silu_gated_linear_f32 if gated else ops.linear_f32
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.gated, self.prompt_rows = gated, prompt_rows
        self.onednn = None if prompt_rows is None else onednn.pack(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn is not None and x.numel() > self.prompt_rows * self.in_features:
            return self._onednn_forward(x)
        return self.kernel(x, self.packed, self.bias, self.out_features)

    def _onednn_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = onednn.linear(x, self.onednn, self.bias)
        if not self.gated:
            return y
        if self.gate_block is None:
            gate, up = y.chunk(2, dim=-1)
            return F.silu(gate) * up
        blocks = y.unflatten(-1, (-1, 2, self.gate_block))  # rounded where the eager SwiGLU rounds
        return (F.silu(blocks[..., 0, :]) * blocks[..., 1, :]).flatten(-2)

    def float_logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 outputs, not rounded to bf16 (an LM head's logits: transformer.float32_logits)."""
        if self.packed.dtype == torch.bfloat16:
            return torch.ops.lmforge.linear_bf16_float(x, self.packed, self.bias, self.out_features)
        return self(x)  # the float32 kernel's

    def weight_bytes(self) -> int:  # what one call reads (the packed weight holds whole blocks of outputs)
        return self.packed.nbytes + (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SiluGatedKernelLinear(KernelLinear):
    """silu(x gate^T) * (x up^T), SwiGLU's first half, in one pass of lmforge's kernel
    (torch.ops.lmforge.silu_gated_linear_bf16 / _f32): each block of the packed weight holds some gate rows and the
    same up rows, so that a task holds both halves of its outputs and the [.., 2 * hidden] projection is never
    written."""

    def __init__(self, gate: nn.Linear, up: nn.Linear, ops, prompt_rows: int | None = None):
        hidden = gate.out_features
        both = fused_linear([gate, up])  # [gate; up] rows
        if both.weight.dtype == torch.bfloat16:  # interleaved here in blocks of 16 rows (the bf16 kernel's half block);
            # the float32 packing interleaves the halves itself, and its kernel the bias
            interleaved = both.weight.view(2, hidden // 16, 16, -1).transpose(0, 1).reshape(2 * hidden, -1)
            both.weight = nn.Parameter(interleaved, requires_grad=False)
            if both.bias is not None:
                both.bias = nn.Parameter(both.bias.view(2, hidden // 16, 16).transpose(0, 1).reshape(-1),
                                         requires_grad=False)
            self.gate_block = 16
        super().__init__(both, ops, gated=True, prompt_rows=prompt_rows)
        self.out_features = hidden
