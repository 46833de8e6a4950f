"""GRPO (Shao et al., 2024, DeepSeekMath): G completions per prompt, the group's rewards as the baseline (no
critic), a clipped per-token ratio objective and a k3 KL penalty to the reference. Options from its successors:
DAPO (Yu et al., 2025: clip-higher, dynamic sampling, token-level loss, soft overlong penalty), Dr. GRPO (Liu et
al., 2025: no std or length normalisation), and the RLOO / ReMax baselines. A rollout objective of the one
Trainer (rollout_objective.py).
"""

from __future__ import annotations

import torch

from lmforge.common.errors import ConfigError
from lmforge.train.post.advantages import group_advantages, same_reward_groups
from lmforge.train.post.kl import k3
from lmforge.train.post.logprobs import entropy_from_logits, gather_logprobs, masked_mean
from lmforge.train.post.rl_config import GRPOConfig
from lmforge.train.post.rollout import (
    GenerateFn,
    ReferenceFn,
    RewardFn,
    Rollout,
    RolloutParams,
    device_of,
    pack,
    sample_rollout,
)
from lmforge.train.post.rollout_objective import Prompts, RolloutAlgorithm, minibatch_updates


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer, then falling linearly to -penalty at max_len."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)).clamp(min=0) / buffer
    return -penalty * over.clamp(max=1.0)


def aggregate_sum(per_token: torch.Tensor, mask: torch.Tensor, how: str, max_new_tokens: int) -> torch.Tensor:
    """A [B, T] per-token loss summed over its units (aggregate = this / aggregate_units): per-sequence means
    (GRPO), all tokens (DAPO), or per-sequence sums / max_new_tokens (Dr. GRPO: no length bias)."""
    if how == "sequence":
        return masked_mean(per_token, mask, dim=-1).sum()
    if how == "token":
        return (per_token * mask).sum()
    return ((per_token * mask).sum(-1) / max_new_tokens).sum()


def aggregate_units(mask: torch.Tensor, how: str) -> int:
    """What aggregate averages over: completion tokens (token) or sequences (sequence, constant)."""
    return int(mask.sum()) if how == "token" else len(mask)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str, max_new_tokens: int) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar: per-sequence mean then mean (GRPO), mean over all tokens of the
    batch (DAPO), or per-sequence sum / max_new_tokens then mean (Dr. GRPO: no length bias)."""
    return aggregate_sum(per_token, mask, how, max_new_tokens) / max(aggregate_units(mask, how), 1)


def grpo_token_loss(logp, old_logp, ref_logp, advantages, eps_low: float, eps_high: float,
                    beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta k3(pi, ref), and where it clipped."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # [B] per sequence, or [B, T] per token
    unclipped, clipped = ratio * adv, ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    if beta > 0:
        loss = loss + beta * k3(logp, ref_logp)
    return loss, (clipped < unclipped).float()


class GRPOTrainer(RolloutAlgorithm):
    """policy: the LM trained in place (it is `module`); reference: None when beta == 0. prompts(step, round) ->
    the prompts of a step's rollout round (round 0 always; more with dynamic sampling)."""

    def __init__(self, cfg: GRPOConfig, policy: torch.nn.Module, reference: ReferenceFn | None, reward_fn: RewardFn,
                 generate_fn: GenerateFn, tokenizer, pad_id: int, prompts: Prompts | None = None,
                 grad_accum: int = 1):
        if cfg.beta > 0 and reference is None:
            raise ConfigError("beta > 0 needs a reference policy (or set beta to 0)")
        super().__init__(policy, prompts, grad_accum)
        self.cfg, self.policy, self.reference = cfg, policy, reference
        self.reward_fn, self.generate_fn, self.tokenizer, self.pad_id = reward_fn, generate_fn, tokenizer, pad_id
        self.unit = "tokens" if cfg.loss_agg == "token" else "sequences"

    @torch.no_grad()
    def sample_completions(self, records: list[dict], seed: int) -> Rollout:
        """G completions per record (consecutive rows), with their rewards."""
        cfg = self.cfg
        self.policy.eval()
        repeated = [r for r in records for _ in range(cfg.group_size)]
        return sample_rollout(repeated, self.tokenizer, self.generate_fn,
                              RolloutParams(cfg.max_new_tokens, cfg.temperature, seed=seed), self.reward_fn,
                              self.pad_id, device_of(self.policy))

    @torch.no_grad()
    def sample_groups(self, records: list[dict], seed: int) -> tuple[Rollout, torch.Tensor]:
        """G completions per record (consecutive rows) and their advantages."""
        cfg = self.cfg
        batch = self.sample_completions(records, seed)
        rewards = batch.rewards + overlong_penalty(batch.lengths(), cfg.max_new_tokens, cfg.overlong_buffer,
                                                   cfg.overlong_penalty)
        baseline = None
        if cfg.advantage == "remax":  # the greedy completion's reward is each prompt's baseline
            greedy = sample_rollout(records, self.tokenizer, self.generate_fn,
                                    RolloutParams(cfg.max_new_tokens, 0.0), self.reward_fn, self.pad_id,
                                    device_of(self.policy))
            baseline = greedy.rewards + overlong_penalty(greedy.lengths(), cfg.max_new_tokens, cfg.overlong_buffer,
                                                         cfg.overlong_penalty)
        return batch, group_advantages(rewards, cfg.group_size, cfg.advantage, baseline)

    def collect(self, step: int) -> tuple[Rollout | None, torch.Tensor | None, dict[str, float]]:
        """A step's groups; with dynamic sampling, all-same-reward groups are dropped and fresh prompts
        (prompts(step, round)) refill the step for up to resample_rounds extra rounds."""
        cfg = self.cfg
        kept: list[tuple[Rollout, torch.Tensor]] = []
        n_groups, n_seen, first_reward = 0, 0, None
        for round_ in range(1 + (cfg.resample_rounds if cfg.dynamic_sampling else 0)):
            records = self.prompts(step, round_)
            batch, adv = self.sample_groups(records, seed=cfg.seed * 1_000_003 + step * 10_007 + round_ * 101)
            first_reward = float(batch.rewards.mean()) if first_reward is None else first_reward
            n_seen += len(records)
            if cfg.dynamic_sampling:
                keep_group = ~same_reward_groups(batch.rewards, cfg.group_size)
                rows = torch.nonzero(keep_group.repeat_interleave(cfg.group_size)).flatten()
                take = min(int(keep_group.sum()), cfg.prompts_per_step - n_groups) * cfg.group_size
                rows = rows[:take]
                if len(rows):
                    kept.append((batch.select(rows), adv[rows]))
                n_groups += len(rows) // cfg.group_size
                if n_groups >= cfg.prompts_per_step:
                    break
            else:
                kept.append((batch, adv))
                n_groups = len(records)
        info = {"reward": first_reward, "groups_kept": n_groups / max(n_seen, 1)}
        if not kept:
            return None, None, info
        return _concat([b for b, _ in kept], self.pad_id), torch.cat([a for _, a in kept]), info

    def rollout(self, step: int) -> list[list[tuple]]:
        """The step's groups, their old and reference log-probs, and `iterations` shuffled passes cut into
        minibatch updates (none when dynamic sampling kept no group: nothing to learn from this step)."""
        cfg = self.cfg
        batch, advantages, info = self.collect(step)
        self.rollout_stats = {**info, "updates": 0}
        if batch is None:
            return []
        with torch.no_grad():
            old_logp = gather_logprobs(self.policy(batch.ids, attention_mask=batch.attention_mask)[:, :-1],
                                       batch.ids[:, 1:])
            ref_logp = self.reference(batch.ids, batch.attention_mask) if cfg.beta > 0 else old_logp
        self.batch, self.advantages, self.old_logp, self.ref_logp = batch, advantages, old_logp, ref_logp
        self.policy.train()
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        orders = [torch.randperm(len(batch), generator=generator) for _ in range(cfg.iterations)]
        updates = minibatch_updates(orders, cfg.minibatch_size, self.grad_accum)
        self.rollout_stats.update(updates=len(updates), length=float(batch.lengths().mean()))
        return updates

    def units(self, rows: torch.Tensor) -> int:
        return aggregate_units(self.batch.mask[rows], self.cfg.loss_agg)

    def batch_loss(self, model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        """The micro-batch's clipped-ratio + k3 loss, summed over its units (aggregate_sum)."""
        cfg, (rows,) = self.cfg, batch
        ids, mask = self.batch.ids[rows], self.batch.mask[rows]
        logits = model(ids, attention_mask=self.batch.attention_mask[rows])[:, :-1]
        logp = gather_logprobs(logits, ids[:, 1:])
        per_token, clipped = grpo_token_loss(logp, self.old_logp[rows], self.ref_logp[rows], self.advantages[rows],
                                             cfg.eps_low, cfg.eps_high, cfg.beta)
        with torch.no_grad():
            self.updates_stats.add(float(mask.sum()), {
                "kl_k3": float(masked_mean(k3(logp, self.ref_logp[rows]), mask, dim=None)),
                "entropy": float(masked_mean(entropy_from_logits(logits), mask, dim=None)),
                "clip_frac": float(masked_mean(clipped, mask, dim=None))})
        return aggregate_sum(per_token, mask, cfg.loss_agg, cfg.max_new_tokens)

    def step(self, records_for_round, step: int) -> dict[str, float]:
        """One GRPO step outside the Trainer; records_for_round(round) -> the prompts of a rollout round."""
        self.prompts = lambda _step, round_: records_for_round(round_)
        if not hasattr(self, "_optimizer"):
            self._optimizer = self.optimizer(self.cfg.lr)
        return self.run_step(step, self._optimizer, self.cfg.grad_clip)


def _concat(parts: list[Rollout], pad_id: int) -> Rollout:
    if len(parts) == 1:
        return parts[0]
    prompts = [p for b in parts for p in b.prompt_ids]
    completions = [c for b in parts for c in b.completion_ids]
    ids, attention, mask = pack(prompts, completions, pad_id, parts[0].ids.device)
    return Rollout([r for b in parts for r in b.records], prompts, completions, [t for b in parts for t in b.texts],
                   torch.cat([b.rewards for b in parts]), ids, attention, mask)
