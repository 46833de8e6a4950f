"""SmoothQuant (Xiao et al., 2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models"): W8A8 linears, whose activations are int8 as well as their weights.

A few input channels with outlier activations make per-token int8 activations coarse for every other channel.
Dividing channel j of x by s_j = max|x_j|^a / max|W_:,j|^(1-a) (migration strength a = 0.5) and multiplying the
weight's column j by s_j moves that difficulty to the weights, which absorb it easily (smoothquant/smooth.py in
github.com/mit-han-lab/smoothquant). Weights: int8 per output channel; activations: int8 per token, computed on the
fly (the paper's dynamic per-token setting); the int8 x int8 -> int32 product runs on torch._int_mm (oneDNN: VNNI or
AMX where the CPU has them). The 1/s stays an explicit input scale, applied in the same pass that quantizes x. Layers
that read the same input (q/k/v, gate/up) share one s, from the largest |W_:,j| over all of them, as the reference's
smooth_ln_fcs does: that is what folding s into their common norm requires, and it lets prepare_for_inference fuse
them into one W8A8 projection (`concat_outputs`).
"""

import torch
from torch import nn

from lmforge.quant.calibration import LinearStats

ALPHA = 0.5


def smoothing_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """s [K] with max|x_j / s_j| and max|W_:,j * s_j| balanced (both equal sqrt(max|x_j| max|W_:,j|) at a = 0.5)."""
    w_max = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
    return (act_absmax.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


def quantize_per_row(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, float32 scales [rows]) with x ~ q * s[:, None], symmetric, max |x| of each row -> 127."""
    scales = (x.abs().amax(dim=-1) / 127).clamp(min=1e-10)
    return torch.round(x / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


class W8A8Linear(nn.Module):
    """y = (q_x q_W^T) * s_x s_W (+ bias): int8 weight [out, in] with float32 scales [out], activations quantized per
    token after the smoothing input scale."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scales", torch.ones(out_features))
        self.register_buffer("input_scale", torch.ones(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, stats: LinearStats | None, alpha: float = ALPHA,
                    smoothing: torch.Tensor | None = None) -> "W8A8Linear":
        """stats None: no smoothing (plain W8A8, for comparison). smoothing: s [in] given (shared with the other
        layers that read the same input), instead of computed from this layer's weight alone."""
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        W = linear.weight.detach().float().cpu()
        if smoothing is not None:
            s = smoothing.float().cpu()
        else:
            s = smoothing_scales(stats.abs_max, W, alpha) if stats is not None else torch.ones(linear.in_features)
        q, scales = quantize_per_row(W * s)
        module.weight.copy_(q)
        module.weight_scales.copy_(scales)
        module.input_scale.copy_(1 / s)
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return module.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float() * self.input_scale
        q, sx = quantize_per_row(flat)
        acc = torch._int_mm(q, self.weight.t())  # int32 [tokens, out]
        y = acc.float() * sx[:, None] * self.weight_scales
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scales[:, None] * self.input_scale[None, :]

    @classmethod
    def concat_outputs(cls, layers: list[nn.Module]) -> "W8A8Linear | None":
        """One W8A8 layer computing `layers` side by side, or None unless they share their input size, smoothing
        scales and bias-ness (prepare_for_inference's q/k/v and gate/up fusion)."""
        first = layers[0]
        if any(type(m) is not cls or m.in_features != first.in_features or (m.bias is None) != (first.bias is None)
               or not torch.equal(m.input_scale, first.input_scale) for m in layers):
            return None
        fused = cls(first.in_features, sum(m.out_features for m in layers), bias=first.bias is not None)
        fused.weight = torch.cat([m.weight for m in layers])
        fused.weight_scales = torch.cat([m.weight_scales for m in layers])
        fused.input_scale = first.input_scale.clone()
        if first.bias is not None:
            fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), requires_grad=False)
        return fused.to(first.weight.device)

    def weight_bytes(self) -> int:
        """What one call reads: the int8 codes, the per-channel weight scales, the smoothing scales and the bias."""
        tensors = (self.weight, self.weight_scales, self.input_scale) + (() if self.bias is None else (self.bias,))
        return sum(t.numel() * t.element_size() for t in tensors)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, w8a8"
