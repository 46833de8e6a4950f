"""Per-token log-probabilities of a sequence under a causal LM, and masked reductions: the quantities every
post-training loss is written in (SFT, DPO's sequence log-ratios, PPO/GRPO's per-token ratios and KL).

Convention: for ids [B, T], `token_logprobs` returns [B, T-1] where entry t is log p(ids[t+1] | ids[:t+1]);
a completion mask [B, T] (1 on the tokens being scored) is shifted the same way by `target_mask`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[..., target] in float32, without materialising the whole log-softmax twice."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1]: log p(ids[:, t+1] | ids[:, :t+1]). Padding (attention_mask 0) may sit on either side."""
    logits = model(ids, attention_mask=attention_mask)
    return gather_logprobs(logits[:, :-1], ids[:, 1:])


def target_mask(mask: torch.Tensor) -> torch.Tensor:
    """A [B, T] mask over scored tokens -> the [B, T-1] mask aligned with token_logprobs."""
    return mask[:, 1:].to(torch.float32)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    """Mean over the masked-in entries (along dim, or of everything with dim=None); 0 where none are."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits), float32: -sum p log p."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
