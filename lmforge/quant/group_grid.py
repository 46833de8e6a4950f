"""The group-wise asymmetric integer grid every weight-only method here rounds to (RTN, AWQ, GPTQ; int3 and int4).

One (scale, zero) per row and group of `group_size` input channels, in the int4 kernel's convention
w ~ (q - 8) * scale + zero with zero the value of code 8 (int_linear.py). A b-bit grid uses the codes 0 .. 2^b - 1,
so an int3 weight is an int4 weight whose codes stop at 7: it runs through the same kernel and file layout, and only
the rounding error is 3-bit. Scales and zeros are rounded to bf16 before the codes are chosen (the kernel reads bf16).
"""

import torch

from lmforge.common.errors import LmforgeError

KERNEL_DTYPE = torch.bfloat16
WEIGHT_BITS = (3, 4)


def check_bits(bits: int) -> int:
    if bits not in WEIGHT_BITS:
        raise LmforgeError(f"group-wise bits must be one of {WEIGHT_BITS}, got {bits!r}")
    return 2**bits - 1


def grid(w: torch.Tensor, bits: int, clip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zeros) [..., ] of a b-bit grid spanning each row of `w` [..., G] (its last dim is one group).

    clip: [...] ratios in (0, 1]: the range is first clamped to +-ratio * max|w| (llm-awq's auto_clip), which
    trades a few clipped outliers for a finer step on everything else.
    """
    maxq = check_bits(bits)
    w = w.float()
    if clip is not None:
        bound = w.abs().amax(dim=-1) * clip
        w = torch.maximum(torch.minimum(w, bound[..., None]), -bound[..., None])
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    scales = ((hi - lo) / maxq).clamp(min=1e-6).to(KERNEL_DTYPE).float()
    zeros = (lo + 8 * scales).to(KERNEL_DTYPE).float()
    return scales, zeros


def codes(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int) -> torch.Tensor:
    """The nearest grid codes (uint8 in [0, 2^b - 1]) of w [..., G] for per-row scales and zeros [...]."""
    maxq = check_bits(bits)
    return torch.round((w.float() - zeros[..., None]) / scales[..., None] + 8).clamp(0, maxq).to(torch.uint8)


def values(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    return (q.float() - 8) * scales[..., None] + zeros[..., None]


def check_group(in_features: int, group_size: int, name: str = "weight") -> None:
    if group_size <= 0 or in_features % group_size:
        divisors = [g for g in (32, 64, 128, 256) if in_features % g == 0]
        raise LmforgeError(f"group_size {group_size} does not divide in_features {in_features} of {name}; "
                           f"use one of {divisors}")


def quantize_groups(w: torch.Tensor, bits: int, group_size: int,
                    clip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (codes uint8 [N, K], scales [N, K/G], zeros [N, K/G]). clip: [N, K/G] ratios or None."""
    N, K = w.shape
    check_group(K, group_size)
    groups = w.detach().float().reshape(N, K // group_size, group_size)
    scales, zeros = grid(groups, bits, clip)
    return codes(groups, scales, zeros, bits).reshape(N, K), scales, zeros


def dequantize_groups(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    N, K = q.shape
    return values(q.reshape(N, scales.shape[1], -1), scales, zeros).reshape(N, K)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, clip: torch.Tensor | None = None) -> torch.Tensor:
    """w rounded to its grid, in float (what the quantized layer will compute with)."""
    return dequantize_groups(*quantize_groups(w, bits, group_size, clip))
