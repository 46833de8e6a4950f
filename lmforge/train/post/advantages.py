"""Advantage estimators for policy-gradient post-training, vectorised over a [B, T] batch with a mask:
GAE (Schulman et al., 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation") for PPO,
and the critic-free baselines: GRPO's group normalisation (Shao et al., 2024, DeepSeekMath), Dr. GRPO's unscaled
form (Liu et al., 2025), RLOO's leave-one-out mean (Ahmadian et al., 2024) and ReMax's greedy baseline (Li et al.).
"""

from __future__ import annotations

import torch

from lmforge.train.post.rl_config import GROUP_ADVANTAGES


def discount_matrix(T: int, factor: float, device=None) -> torch.Tensor:
    """W[t, s] = factor^(s - t) for s >= t, else 0: row t sums a discounted future."""
    steps = torch.arange(T, device=device)
    power = (steps[None, :] - steps[:, None]).float()
    return torch.where(power >= 0, torch.pow(torch.tensor(factor, device=device), power.clamp(min=0)), 0.0)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each [B, T], zero outside the mask.

    Each row's masked-in positions are one episode, contiguous, ending at its last masked-in position (the value
    after it is 0: the episode is over). delta_t = r_t + gamma V_{t+1} - V_t; A_t = sum_k (gamma lam)^k delta_{t+k},
    computed as one matrix product with the discount matrix instead of a loop over tokens.
    """
    mask = mask.float()
    values = values.float() * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    next_values = next_values * torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    deltas = (rewards.float() + gamma * next_values - values) * mask
    advantages = deltas @ discount_matrix(rewards.shape[1], gamma * lam, rewards.device).T
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked-in entries (population variance); the mean is kept when shift_mean=False."""
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / n
    var = (((values - mean) ** 2) * mask).sum() / n
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def group_advantages(rewards: torch.Tensor, group_size: int, kind: str = "grpo",
                     baseline: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    """[N * G] sequence rewards, G consecutive samples per prompt -> [N * G] advantages.

    grpo:   (r - mean_group) / (std_group + eps)   (std unbiased, as in DeepSeekMath / TRL)
    drgrpo: r - mean_group                         (no std division: no difficulty bias)
    rloo:   r_i - mean_{j != i} r_j = G / (G - 1) (r_i - mean_group)
    remax:  r - baseline, baseline [N] = the reward of each prompt's greedy completion
    """
    if kind not in GROUP_ADVANTAGES:
        raise ValueError(f"advantage must be one of {', '.join(GROUP_ADVANTAGES)}, got {kind!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    if kind == "remax":
        if baseline is None:
            raise ValueError("remax needs the greedy completions' rewards as baseline")
        return (r - baseline.float().view(-1, 1)).reshape(-1)
    mean = r.mean(dim=1, keepdim=True)
    if kind == "drgrpo":
        return (r - mean).reshape(-1)
    if kind == "rloo":
        if group_size < 2:
            raise ValueError("rloo needs group_size >= 2")
        return (group_size / (group_size - 1) * (r - mean)).reshape(-1)
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((r - mean) / (std + eps)).reshape(-1)


def same_reward_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N] True for groups whose G rewards are all equal (no learning signal: DAPO's dynamic sampling drops them)."""
    r = rewards.float().view(-1, group_size)
    return (r.max(dim=1).values - r.min(dim=1).values) == 0
