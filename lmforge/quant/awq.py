"""AWQ (Lin et al., 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration").

Scale input channel j of a weight up by s_j = mean|x_j|^alpha before rounding, and the input down by as much, so the
channels that carry large activations lose less to rounding; alpha is searched on a grid of 20 for the smallest
output error, then each group's clipping range is searched too. Follows llm-awq (github.com/mit-han-lab/llm-awq,
awq/quantize/auto_scale.py `search_module_scale`, auto_clip.py `auto_clip_layer`: n_grid 20, max_shrink 0.5, no
clipping for q/k). The output error ||X W^T - X W_q^T||^2 = sum((D G) * D), D = W - W_q, G = X^T X, is read from the
calibration Gram matrix, so a candidate costs one matmul and no forward pass.

The 1/s stays an explicit input scale (`ScaledInputLinear`) instead of being folded into the preceding norm or
linear as llm-awq does: it works for any block (BERT's post-norm, an input behind GELU, grouped-query v -> o) at the
cost of one multiply of the activations per layer, and each layer gets its own s instead of one shared by q, k, v.
"""

import torch
from torch import nn

from lmforge.quant.calibration import LinearStats
from lmforge.quant.group_grid import fake_quantize, quantize_groups
from lmforge.quant.int_linear import Int4Linear

N_GRID = 20
MAX_SHRINK = 0.5
NO_CLIP = ("q_proj", "k_proj")  # their output error does not measure the attention scores' error (llm-awq)


class ScaledInputLinear(nn.Module):
    """y = inner(x * input_scale): a quantized layer whose weight columns were multiplied by 1 / input_scale."""

    def __init__(self, inner: nn.Module, in_features: int):
        super().__init__()
        self.inner = inner
        self.in_features, self.out_features = in_features, inner.out_features
        self.register_buffer("input_scale", torch.ones(in_features))
        self.alpha = None  # the exponent the search chose (not saved)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float() * self.input_scale).to(x.dtype)  # one rounding of x / s, not two

    def dequantize(self) -> torch.Tensor:
        return self.inner.dequantize() * self.input_scale[None, :]


def output_error(delta: torch.Tensor, gram: torch.Tensor) -> float:
    """||X delta^T||^2 for the Gram matrix gram = X^T X."""
    return float(((delta @ gram) * delta).sum())


def output_error_per_group(delta: torch.Tensor, gram: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K/G]: each (row, group)'s own share ||X_g delta_g^T||^2 (the diagonal blocks of the Gram matrix)."""
    N, K = delta.shape
    d = delta.reshape(N, K // group_size, group_size)
    blocks = torch.stack([gram[i:i + group_size, i:i + group_size] for i in range(0, K, group_size)])
    return torch.einsum("ngk,gkl,ngl->ng", d, blocks, d)


@torch.no_grad()
def search_scale(weight: torch.Tensor, stats: LinearStats, bits: int, group_size: int
                 ) -> tuple[torch.Tensor, float, list[float]]:
    """(s [K], chosen alpha, output error per alpha): alpha = 0 (s = 1) is round-to-nearest, so the search never
    does worse than RTN on the calibration inputs."""
    W, gram, x_mean = weight.detach().float(), stats.gram.float(), stats.abs_mean
    errors, best = [], (float("inf"), None, 0.0)
    for i in range(N_GRID):
        alpha = i / N_GRID
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = output_error(W - fake_quantize(W * s, bits, group_size) / s, gram)
        errors.append(err)
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2], errors


@torch.no_grad()
def search_clip(weight: torch.Tensor, gram: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """[N, K/G] clipping ratios (1 = the group's full range) minimising each group's output error."""
    N, K = weight.shape
    best_err = torch.full((N, K // group_size), float("inf"))
    best = torch.ones(N, K // group_size)
    for i in range(int(MAX_SHRINK * N_GRID)):
        ratio = torch.full_like(best, 1 - i / N_GRID)
        err = output_error_per_group(weight - fake_quantize(weight, bits, group_size, ratio), gram, group_size)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, ratio, best)
    return best


@torch.no_grad()
def awq_linear(linear: nn.Linear, stats: LinearStats, bits: int, group_size: int,
               clip: bool = True) -> ScaledInputLinear:
    """The AWQ-quantized layer: codes of W * s on the b-bit grid (clipped per group), input scaled by 1 / s."""
    W = linear.weight.detach().float()
    s, alpha, _ = search_scale(W, stats, bits, group_size)
    scaled = W * s
    ratio = None
    if clip:
        gram = stats.gram.float() / s[:, None] / s[None, :]  # the Gram matrix of the scaled inputs x / s
        ratio = search_clip(scaled, gram, bits, group_size)
    q, scales, zeros = quantize_groups(scaled, bits, group_size, ratio)
    inner = Int4Linear.from_codes(q, scales, zeros, group_size, linear.bias)
    module = ScaledInputLinear(inner, linear.in_features)
    module.input_scale.copy_(1 / s)
    module.alpha = alpha
    return module.to(linear.weight.device)
