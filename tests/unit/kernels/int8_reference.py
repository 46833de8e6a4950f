"""A PyTorch reference of the int8-activation kernels' math (lmforge/kernels/csrc/int8_dot.h): each input row
quantized per block of 32 channels (scale max|x| / 127, codes round-half-even(x * (127 / max|x|))), exact integer dot
products per block, then the float scales. Float64 after the integer step: the kernels differ from it by float32
rounding of their sums only."""

import torch

BLOCK = 32


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 x [M, K] -> (int64 codes [M, blocks, 32], float32 scales [M, blocks]); channels past K are zero."""
    M, K = x.shape
    blocks = -(-K // BLOCK)
    xf = torch.nn.functional.pad(x.float(), (0, blocks * BLOCK - K)).view(M, blocks, BLOCK)
    amax = xf.abs().amax(-1)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros(()))
    return torch.round(xf * inv[..., None]).long(), amax / 127


def block_dots(x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 dot products [M, N, blocks] of x's int8 codes with integer weight codes [N, K], x's block scales)."""
    xq, sx = quantize_rows(x)
    N, K = codes.shape
    w = torch.nn.functional.pad(codes.long(), (0, xq.shape[1] * BLOCK - K)).view(N, -1, BLOCK)
    return torch.einsum("mbk,nbk->mnb", xq, w), sx


def int8_linear(x, q, scales, bias=None, magnitude=False) -> torch.Tensor:
    """float64 y [M, N] for Int8Linear's codes q [N, K] and per-output scales, int8 activations (magnitude: the sum
    of the terms' absolute values instead, which the kernel's float32 rounding is relative to)."""
    dots, sx = block_dots(x, q)
    if magnitude:
        return (dots.double().abs() * sx.double()[:, None, :]).sum(-1) * scales.double().abs()
    y = (dots.double() * sx.double()[:, None, :]).sum(-1) * scales.double()
    return y if bias is None else y + bias.double()


def int4_linear(x, q, scales, zeros, group_size, bias=None, magnitude=False) -> torch.Tensor:
    """float64 y for Int4Linear's codes q [N, K] in [0, 15], w = (q - 8) s + z per group (scales, zeros [N, K/G],
    bf16 values): per group s sum_b sx_b dot_b + (z - 8 s) sum_b sx_b sum(xq_b), z - 8 s rounded to float32."""
    dots, sx = block_dots(x, q)  # [M, N, blocks]
    per = group_size // BLOCK
    groups = dots.shape[2] // per
    xq, _ = quantize_rows(x)
    xsum = (sx.double() * xq.sum(-1).double()).view(x.shape[0], groups, per).sum(-1)  # [M, groups]
    qx = (dots.double() * sx.double()[:, None, :]).view(*dots.shape[:2], groups, per).sum(-1)  # [M, N, groups]
    s, z = scales.float(), zeros.float()
    c = (z - 8 * s).double()  # rounded once, as the kernel's fused multiply-add
    if magnitude:
        qx = (dots.double().abs() * sx.double()[:, None, :]).view(*dots.shape[:2], groups, per).sum(-1)
        return (qx * s.double().abs() + xsum.abs()[:, None, :] * c.abs()).sum(-1)
    y = (qx * s.double() + xsum[:, None, :] * c).sum(-1)
    return y if bias is None else y + bias.double()
