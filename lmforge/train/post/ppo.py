"""PPO for language models (Stiennon et al., 2020; Ouyang et al., 2022 "InstructGPT"): four models — the actor
(the policy LM), the critic (a ScalarHead value per token), the reward (a verifiable checker or a reward model)
and the frozen reference. The reward is the score at the last token minus a per-token KL "leash" beta * (log pi -
log ref), beta fixed or adapted (Ziegler et al., 2019); advantages by GAE; clipped policy and value losses. Actor
and critic are one module (ActorCritic) trained as a rollout objective of the one Trainer (rollout_objective.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lmforge.train.post.advantages import gae, whiten
from lmforge.train.post.kl import k1, k2
from lmforge.train.post.logprobs import entropy_from_logits, gather_logprobs, masked_mean
from lmforge.train.post.rl_config import PPOConfig
from lmforge.train.post.rollout import (
    GenerateFn,
    ReferenceFn,
    RewardFn,
    Rollout,
    RolloutParams,
    device_of,
    sample_rollout,
)
from lmforge.train.post.rollout_objective import Prompts, RolloutAlgorithm, minibatch_updates
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


def ppo_policy_terms(logp, old_logp, advantages, clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old, and 1.0 where the clip bit."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def ppo_policy_loss(logp, old_logp, advantages, mask, clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip fraction): the masked means of ppo_policy_terms."""
    per_token, clipped = ppo_policy_terms(logp, old_logp, advantages, clip_eps)
    return masked_mean(per_token, mask, dim=None), masked_mean(clipped, mask, dim=None)


def ppo_value_terms(values, old_values, returns, clip: float) -> torch.Tensor:
    """Per token: 0.5 max((V - R)^2, (V_clipped - R)^2), V_clipped = V_old + clip(V - V_old, +-clip)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def ppo_value_loss(values, old_values, returns, mask, clip: float) -> torch.Tensor:
    return masked_mean(ppo_value_terms(values, old_values, returns, clip), mask, dim=None)


class ActorCritic(nn.Module):
    """PPO's policy and value model as one module (one optimizer, one checkpoint): the critic is a ScalarHead on
    the actor's own backbone (shared, a memory saver) or on a copy of the actor's starting weights."""

    def __init__(self, actor: nn.Module, shared_backbone: bool = False):
        super().__init__()
        self.actor = actor
        self.critic = ScalarHead(actor if shared_backbone else copy.deepcopy(actor))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.actor(ids, attention_mask=attention_mask)


class PPOTrainer(RolloutAlgorithm):
    """actor: the policy LM (trained in place, inside `module`, an ActorCritic). reference: a ReferenceFn (a frozen
    copy or adapters-disabled). prompts(step, round) -> the step's batch_size prompts."""

    def __init__(self, cfg: PPOConfig, actor: nn.Module, reference: ReferenceFn, reward_fn: RewardFn,
                 generate_fn: GenerateFn, tokenizer, pad_id: int, prompts: Prompts | None = None,
                 grad_accum: int = 1):
        super().__init__(ActorCritic(actor, cfg.shared_backbone), prompts, grad_accum)
        self.cfg, self.actor, self.critic, self.reference = cfg, actor, self.module.critic, reference
        self.reward_fn, self.generate_fn, self.tokenizer, self.pad_id = reward_fn, generate_fn, tokenizer, pad_id
        self.kl_ctl = AdaptiveKLController(cfg.beta, cfg.target_kl if cfg.adaptive_kl else None, cfg.kl_horizon)

    def param_groups(self, module: ActorCritic) -> list[dict]:
        """The actor's parameters at lr, the critic's own (its head, and its backbone unless shared) at critic_lr."""
        actor = [p for p in module.actor.parameters() if p.requires_grad]
        seen = {id(p) for p in actor}
        critic = [p for p in module.critic.parameters() if p.requires_grad and id(p) not in seen]
        scale = (self.cfg.critic_lr or self.cfg.lr) / self.cfg.lr
        return [{"params": actor, "weight_decay": 0.0, "lr_scale": 1.0, "name": "actor"},
                {"params": critic, "weight_decay": 0.0, "lr_scale": scale, "name": "critic"}]

    def sample(self, records: list[dict], step: int) -> Rollout:
        params = RolloutParams(self.cfg.max_new_tokens, self.cfg.temperature,
                               seed=self.cfg.seed * 1_000_003 + step * 10_007)
        self.module.eval()
        with torch.no_grad():
            return sample_rollout(records, self.tokenizer, self.generate_fn, params, self.reward_fn, self.pad_id,
                                  device_of(self.module))

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
        rewards[torch.arange(len(batch), device=rewards.device), last] += batch.rewards
        advantages, returns = gae(rewards, values, batch.mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = whiten(advantages, batch.mask)
        return {"old_logp": old_logp, "ref_logp": ref_logp, "values": values, "advantages": advantages,
                "returns": returns, "kl": kl.sum(1)}

    def rollout(self, step: int) -> list[list[tuple]]:
        """Sample, score, adapt beta (the step's figures keep the beta it used), and cut ppo_epochs shuffled
        passes over the rollout into minibatch updates."""
        self.batch = batch = self.sample(self.prompts(step, 0), step)
        self.scored = scored = self.score(batch)
        kl = float(scored["kl"].mean())
        value_error = float(masked_mean((scored["values"] - scored["returns"]) ** 2, batch.mask, dim=None))
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + step)
        orders = [torch.randperm(len(batch), generator=generator) for _ in range(self.cfg.ppo_epochs)]
        updates = minibatch_updates(orders, self.cfg.minibatch_size, self.grad_accum)
        self.rollout_stats = {"reward": float(batch.rewards.mean()), "kl": kl, "beta": self.kl_ctl.beta,
                              "value_error": value_error, "length": float(batch.lengths().mean()),
                              "updates": len(updates)}
        self.kl_ctl.update(kl, len(batch))
        self.module.train()
        return updates

    def units(self, rows: torch.Tensor) -> int:
        return int(self.batch.mask[rows].sum())

    def batch_loss(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        """The micro-batch's summed per-token policy loss + vf_coef value loss - entropy_coef entropy."""
        cfg, (rows,), scored = self.cfg, batch, self.scored
        ids, attention, mask = self.batch.ids[rows], self.batch.attention_mask[rows], self.batch.mask[rows]
        logits = model.actor(ids, attention_mask=attention)[:, :-1]
        logp = gather_logprobs(logits, ids[:, 1:])
        old_logp = scored["old_logp"][rows]
        policy, clipped = ppo_policy_terms(logp, old_logp, scored["advantages"][rows], cfg.clip_eps)
        values = model.critic(ids, attention)[:, :-1]
        value = ppo_value_terms(values, scored["values"][rows], scored["returns"][rows], cfg.value_clip)
        entropy = entropy_from_logits(logits)
        with torch.no_grad():
            self.updates_stats.add(float(mask.sum()), {
                "policy_loss": float(masked_mean(policy, mask, dim=None)),
                "value_loss": float(masked_mean(value, mask, dim=None)),
                "entropy": float(masked_mean(entropy, mask, dim=None)),
                "clip_frac": float(masked_mean(clipped, mask, dim=None)),
                "approx_kl": float(masked_mean(k2(logp, old_logp), mask, dim=None))})
        return ((policy + cfg.vf_coef * value - cfg.entropy_coef * entropy) * mask).sum()

    def state_dict(self) -> dict:
        return {"beta": self.kl_ctl.beta}

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.beta = state["beta"]

    def step(self, records: list[dict], step: int) -> dict[str, float]:
        """One PPO iteration on `records` outside the Trainer: sample, score, update; the step's figures."""
        self.prompts = lambda _step, _round: records
        if not hasattr(self, "_optimizer"):
            self._optimizer = self.optimizer(self.cfg.lr)
        return self.run_step(step, self._optimizer, self.cfg.grad_clip)
