"""GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers").

Quantize a weight matrix one input column at a time and push each column's rounding error onto the columns not yet
quantized, weighted by the inverse Hessian H = 2 X^T X / n of the layer's output error (Optimal Brain Quantization),
in blocks of 128 columns with lazy batched updates and the Cholesky factor of H^-1 for stability. Follows the
reference code (github.com/IST-DASLab/gptq, gptq.py `GPTQ.fasterquant`): 1% dampening, dead inputs zeroed, a group's
grid fixed from its current values when its first column is reached. act_order (columns by decreasing H_jj) is not
implemented: with groups it needs static grids (AutoGPTQ's static_groups) to keep the file layout.
"""

import torch

from lmforge.quant.group_grid import check_group, codes, grid, values

BLOCK_SIZE = 128
DAMP = 0.01


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, mask of dead inputs (H_jj = 0))."""
    H = hessian.float().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    H.diagonal().add_(damp * H.diagonal().mean())
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True), dead


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int,
                  block_size: int = BLOCK_SIZE, damp: float = DAMP
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, K], scales [N, K/G], zeros [N, K/G]) on the group_grid grid, for weight [N, K] and the
    Hessian [K, K] of its inputs (calibration.LinearStats.hessian)."""
    W = weight.detach().float().clone()
    N, K = W.shape
    check_group(K, group_size)
    Hinv, dead = inverse_hessian_factor(hessian, damp)
    W[:, dead] = 0
    Q = torch.zeros(N, K, dtype=torch.uint8)
    scales = torch.zeros(N, K // group_size)
    zeros = torch.zeros(N, K // group_size)
    for i1 in range(0, K, block_size):
        i2 = min(i1 + block_size, K)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = col // group_size
            if col % group_size == 0:  # the group's grid, from its columns as the earlier errors left them
                current = torch.cat((W1[:, i:], W[:, i2:]), dim=1)[:, :group_size]
                scales[:, g], zeros[:, g] = grid(current, bits)
            w = W1[:, i:i + 1]
            q = codes(w, scales[:, g], zeros[:, g], bits)
            Q[:, col] = q[:, 0]
            err = (w - values(q, scales[:, g], zeros[:, g])) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            err1[:, i:i + 1] = err
        W[:, i2:] -= err1 @ Hinv[i1:i2, i2:]
    return Q, scales, zeros
