"""Per-token estimators of KL(pi || ref) from samples of pi (Schulman, 2020, "Approximating KL divergence"):
with log r = log ref(x) - log pi(x), k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased, low
variance), k3 = (r - 1) - log r (unbiased and always >= 0; GRPO's KL penalty).
"""

from __future__ import annotations

import torch

ESTIMATORS = ("k1", "k2", "k3")


def log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log r = log ref - log pi, per token (float32)."""
    return ref_logp.float() - logp.float()


def k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return -log_ratio(logp, ref_logp)


def k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * log_ratio(logp, ref_logp) ** 2


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """expm1 keeps (r - 1) exact for r near 1; the result is >= 0 up to rounding, so it is clamped there."""
    lr = log_ratio(logp, ref_logp)
    return (torch.expm1(lr) - lr).clamp(min=0.0)


def kl_estimate(kind: str, logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    if kind not in ESTIMATORS:
        raise ValueError(f"KL estimator must be one of {', '.join(ESTIMATORS)}, got {kind!r}")
    return {"k1": k1, "k2": k2, "k3": k3}[kind](logp, ref_logp)


def exact_kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Per-position exact KL(softmax(logits) || softmax(ref_logits)) over the whole vocabulary."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)
