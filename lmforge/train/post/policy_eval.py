"""Held-out evaluation of an RL-tuned policy: mean reward of its greedy and sampled completions, and the KL to
the reference policy on its own samples (a Monte-Carlo estimate: the mean of sum_t log pi/ref over completions),
the two numbers PPO and GRPO trade off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.train.post.kl import k3
from lmforge.train.post.logprobs import masked_mean, masked_sum, token_logprobs
from lmforge.train.post.rollout import GenerateFn, ReferenceFn, RewardFn, RolloutParams, device_of, sample_rollout


@torch.no_grad()
def evaluate_policy(policy: torch.nn.Module, reference: ReferenceFn, records: Sequence[dict], tokenizer,
                    generate_fn: GenerateFn, reward_fn: RewardFn, pad_id: int, max_new_tokens: int,
                    seed: int = 1234, samples_per_prompt: int = 4,
                    extra: dict[str, RewardFn] | None = None) -> dict[str, float]:
    """reward_greedy / reward_sampled: mean reward at temperature 0 / 1 (samples_per_prompt each); kl: mean
    sequence KL(pi || ref) in nats (unbiased: E_pi[sum_t log pi - log ref]); kl_token: per completion token;
    kl_k3: mean per-token k3;
    NAME_greedy: the mean of each extra reward on the greedy completions (e.g. exact match beside a shaped reward)."""
    was_training = policy.training
    policy.eval()
    device = device_of(policy)
    greedy = sample_rollout(records, tokenizer, generate_fn, RolloutParams(max_new_tokens, 0.0), reward_fn, pad_id,
                            device)
    sampled = sample_rollout([r for r in records for _ in range(samples_per_prompt)], tokenizer, generate_fn,
                             RolloutParams(max_new_tokens, 1.0, seed=seed), reward_fn, pad_id, device)
    logp = token_logprobs(policy, sampled.ids, sampled.attention_mask)
    ref = reference(sampled.ids, sampled.attention_mask)
    log_ratio = (logp - ref) * sampled.mask
    policy.train(was_training)
    extras = {f"{name}_greedy": float(torch.as_tensor(fn(greedy.records, greedy.texts), dtype=torch.float32).mean())
              for name, fn in (extra or {}).items()}
    return {**extras, "reward_greedy": float(greedy.rewards.mean()), "reward_sampled": float(sampled.rewards.mean()),
            "kl": float(masked_sum(log_ratio, sampled.mask).mean()),
            "kl_token": float(masked_mean(log_ratio, sampled.mask, dim=None)),
            "kl_k3": float(masked_mean(k3(logp, ref), sampled.mask, dim=None)),
            "length": float(sampled.lengths().mean())}
