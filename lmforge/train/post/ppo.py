"""PPO for language models (Stiennon et al., 2020; Ouyang et al., 2022 "InstructGPT"): four models — the actor
(the policy LM), the critic (a ScalarHead value per token), the reward (a verifiable checker or a reward model)
and the frozen reference. The reward is the score at the last token minus a per-token KL "leash" beta * (log pi -
log ref), beta fixed or adapted (Ziegler et al., 2019); advantages by GAE; clipped policy and value losses.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from lmforge.train.post.advantages import gae, whiten
from lmforge.train.post.kl import k1, k2
from lmforge.train.post.logprobs import entropy_from_logits, gather_logprobs, masked_mean
from lmforge.train.post.rl_config import PPOConfig
from lmforge.train.post.rollout import GenerateFn, ReferenceFn, RewardFn, Rollout, RolloutParams, sample_rollout
from lmforge.train.post.value_head import ScalarHead, last_token_index


class AdaptiveKLController:
    """Ziegler et al. (2019): beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)."""

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n_samples / self.horizon
        return self.beta


def ppo_policy_loss(logp, old_logp, advantages, mask, clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip fraction): masked mean of max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old per token."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return masked_mean(torch.maximum(unclipped, clipped), mask, dim=None), \
        masked_mean((clipped > unclipped).float(), mask, dim=None)


def ppo_value_loss(values, old_values, returns, mask, clip: float) -> torch.Tensor:
    """0.5 * masked mean of max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, +-clip)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask, dim=None)


class PPOTrainer:
    """actor: the policy LM (trained in place). reference: a ReferenceFn (frozen copy or adapters-disabled)."""

    def __init__(self, cfg: PPOConfig, actor: torch.nn.Module, reference: ReferenceFn, reward_fn: RewardFn,
                 generate_fn: GenerateFn, tokenizer, pad_id: int):
        self.cfg, self.actor, self.reference = cfg, actor, reference
        self.reward_fn, self.generate_fn, self.tokenizer, self.pad_id = reward_fn, generate_fn, tokenizer, pad_id
        self.critic = ScalarHead(actor if cfg.shared_backbone else copy.deepcopy(actor))
        actor_params = list(actor.parameters())
        seen = {id(p) for p in actor_params}
        critic_params = [p for p in self.critic.parameters() if id(p) not in seen]
        self.optimizer = torch.optim.AdamW([{"params": actor_params, "lr": cfg.lr},
                                            {"params": critic_params, "lr": cfg.critic_lr or cfg.lr}],
                                           weight_decay=0.0)
        self.kl_ctl = AdaptiveKLController(cfg.beta, cfg.target_kl if cfg.adaptive_kl else None, cfg.kl_horizon)

    def rollout(self, records: list[dict], step: int) -> Rollout:
        params = RolloutParams(self.cfg.max_new_tokens, self.cfg.temperature,
                               seed=self.cfg.seed * 1_000_003 + step * 10_007)
        self.actor.eval()
        with torch.no_grad():
            return sample_rollout(records, self.tokenizer, self.generate_fn, params, self.reward_fn, self.pad_id)

    @torch.no_grad()
    def score(self, batch: Rollout) -> dict[str, torch.Tensor]:
        """Old log-probs, reference log-probs, values, the KL-shaped per-token rewards, advantages and returns."""
        old_logp = gather_logprobs(self.actor(batch.ids, attention_mask=batch.attention_mask)[:, :-1],
                                   batch.ids[:, 1:])
        ref_logp = self.reference(batch.ids, batch.attention_mask)
        values = self.critic(batch.ids, batch.attention_mask)[:, :-1] * batch.mask
        kl = k1(old_logp, ref_logp) * batch.mask
        rewards = -self.kl_ctl.beta * kl
        last = last_token_index(batch.mask)  # the final completion token, in the [B, T-1] alignment
        rewards[torch.arange(len(batch)), last] += batch.rewards
        advantages, returns = gae(rewards, values, batch.mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = whiten(advantages, batch.mask)
        return {"old_logp": old_logp, "ref_logp": ref_logp, "values": values, "advantages": advantages,
                "returns": returns, "kl": kl.sum(1)}

    def update(self, batch: Rollout, scored: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        self.actor.train()
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0, "approx_kl": 0.0}
        n = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(batch), generator=generator)
            for start in range(0, len(batch), cfg.minibatch_size):
                rows = order[start:start + cfg.minibatch_size]
                ids, attention, mask = batch.ids[rows], batch.attention_mask[rows], batch.mask[rows]
                logits = self.actor(ids, attention_mask=attention)[:, :-1]
                logp = gather_logprobs(logits, ids[:, 1:])
                old_logp = scored["old_logp"][rows]
                policy_loss, clip_frac = ppo_policy_loss(logp, old_logp, scored["advantages"][rows], mask,
                                                         cfg.clip_eps)
                values = self.critic(ids, attention)[:, :-1]
                value_loss = ppo_value_loss(values, scored["values"][rows], scored["returns"][rows], mask,
                                            cfg.value_clip)
                entropy = masked_mean(entropy_from_logits(logits), mask, dim=None)
                loss = policy_loss + cfg.vf_coef * value_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                self.optimizer.step()
                with torch.no_grad():
                    sums["approx_kl"] += float(masked_mean(k2(logp, old_logp), mask, dim=None))
                for key, value in (("policy_loss", policy_loss), ("value_loss", value_loss), ("entropy", entropy),
                                   ("clip_frac", clip_frac)):
                    sums[key] += float(value.detach())
                n += 1
        return {k: v / n for k, v in sums.items()}

    def step(self, records: list[dict], step: int) -> dict[str, float]:
        """One PPO iteration: sample, score, update; returns the metrics to log."""
        batch = self.rollout(records, step)
        scored = self.score(batch)
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + step)
        metrics = self.update(batch, scored, generator)
        kl = float(scored["kl"].mean())
        value_error = float(masked_mean((scored["values"] - scored["returns"]) ** 2, batch.mask, dim=None))
        metrics.update(reward=float(batch.rewards.mean()), kl=kl, beta=self.kl_ctl.beta, value_error=value_error,
                       length=float(batch.lengths().mean()))
        self.kl_ctl.update(kl, len(batch))
        return metrics

    def config_dict(self) -> dict:
        return asdict(self.cfg)
