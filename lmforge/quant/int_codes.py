"""The integer codes of Int8Linear / Int4Linear and how weights become them: round to nearest (RTN), per output channel
(int8, symmetric) or per group of input channels (int4, asymmetric, the "tinygemm" convention of PyTorch's int4
kernel), with the scales rounded to bf16 before the codes are chosen; and int4's portable two-codes-per-byte layout.
"""

import torch

from lmforge.common.errors import LmforgeError

GROUP_SIZES = (32, 64, 128, 256)
KERNEL_DTYPE = torch.bfloat16  # activations, scales and zeros as the fast CPU kernels want them


# ----------------------------------------------------------------------------------------------------------- int8
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [N, K], scales [N]) with w ~ q * scales[:, None]; the scale maps each row's max |w| to 127.

    Scales are rounded to bf16 (what the kernel reads) before the codes are chosen.
    """
    w = w.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(KERNEL_DTYPE).float()
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales.float()[:, None]


# ----------------------------------------------------------------------------------------------------------- int4
def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q uint8 [N, K] in [0, 15], scales [N, K/G], zeros [N, K/G]) with w ~ (q - 8) * scale + zero per group.

    scale spans the group's [min, max] in 15 steps; zero is the value of code 8. Scales and zeros are rounded to
    bf16 *before* the codes are chosen, so the codes are the best ones for the scales the kernel will use.
    """
    N, K = w.shape
    if K % group_size:
        raise LmforgeError(f"int4 group_size {group_size} does not divide the input size {K}; "
                           f"use a group size that divides it (one of {[g for g in GROUP_SIZES if K % g == 0]})")
    groups = w.detach().float().reshape(N, K // group_size, group_size)
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-6).to(KERNEL_DTYPE).float()
    zeros = (lo + 8 * scales).to(KERNEL_DTYPE).float()
    q = torch.round((groups - zeros[..., None]) / scales[..., None] + 8).clamp(0, 15).to(torch.uint8)
    return q.reshape(N, K), scales, zeros


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    N, K = q.shape
    groups = q.float().reshape(N, scales.shape[1], -1)
    return ((groups - 8) * scales.float()[..., None] + zeros.float()[..., None]).reshape(N, K)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K] codes in [0, 15] -> uint8 [N, K/2], even column in the low nibble (a portable file layout)."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def to_kernel_scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """[N, K/G] scales and zeros -> the [K/G, N, 2] bf16 tensor the int4 kernel reads."""
    return torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous().to(KERNEL_DTYPE)
