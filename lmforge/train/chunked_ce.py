"""Fused linear cross-entropy (as in Liger Kernel's FusedLinearCrossEntropy): the LM head and the token loss in
chunks of rows, so no [tokens, vocab] float32 logits / log-softmax / gradient is ever held whole. Each chunk's
logits are made, turned into its loss and, while still in cache, into its gradients (softmax - one-hot), so the
backward only scales the stored input / weight gradients: three matmuls per chunk, as an unfused head's.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 21  # logits per chunk (8 MiB of float32): rows = CHUNK_ELEMENTS // vocab, at least 64


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """Sum over the positions whose label is not IGNORE_INDEX of cross_entropy(hidden @ weight.T, label): the
    same value as F.cross_entropy(logits.float(), labels, reduction="sum") on logits in hidden's dtype, with
    gradients for hidden and weight. hidden [..., D], weight [V, D], labels [...]."""
    rows = chunk_rows or max(CHUNK_ELEMENTS // weight.shape[0], 64)
    return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1), rows)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: int) -> torch.Tensor:
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, y = hidden[start:start + rows], labels[start:start + rows]
            logits = (h @ weight.T).float()
            keep = y != IGNORE_INDEX
            target = y.clamp(min=0).unsqueeze(1)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, target).squeeze(1)) * keep).sum()
            if want_grad:  # d loss / d logits = softmax - one_hot, zero on ignored rows; in place on the logits
                grad = logits.sub_(lse.unsqueeze(1)).exp_()
                grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
                grad = (grad * keep.unsqueeze(1)).to(hidden.dtype)
                torch.mm(grad, weight, out=grad_hidden[start:start + rows])
                grad_weight += (grad.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        g = grad_output.float()
        d_hidden = (grad_hidden * g.to(grad_hidden.dtype)) if ctx.needs_input_grad[0] else None
        d_weight = (grad_weight * g).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return d_hidden, d_weight, None, None
