"""Rollouts for RL post-training: a `GenerateFn` (prompt ids -> completion ids; `policy_generate_fn` decodes with
lmforge.generation, a test may pass its own) samples completions; they are scored by a `RewardFn` (a verifiable
checker or a reward model) and packed right-padded into one [B, T] batch with the completion mask losses use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lmforge.common.errors import ConfigError
from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams


@dataclass(frozen=True)
class RolloutParams:
    """How completions are sampled. seed: row i of a call uses seed + i (None: not reproducible)."""

    max_new_tokens: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not 0.0 <= self.temperature <= 100.0:
            raise ConfigError(f"temperature must be in [0, 100] (0 = greedy), got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")


# generate(prompts, params) -> one list of completion ids per prompt (the stop token included when produced)
GenerateFn = Callable[[list[list[int]], RolloutParams], list[list[int]]]


def policy_generate_fn(model: torch.nn.Module, stop_token_ids: Sequence[int], pad_id: int) -> GenerateFn:
    """A GenerateFn on lmforge.generation's decode loop: row i of a call samples with seed + i, so the G samples of
    a group differ while the whole rollout stays reproducible."""

    def generate_fn(prompts: list[list[int]], params: RolloutParams) -> list[list[int]]:
        rows = [SamplingParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                               top_p=params.top_p, seed=None if params.seed is None else params.seed + i,
                               stop_token_ids=tuple(stop_token_ids))
                for i in range(len(prompts))]
        was_training = model.training
        model.eval()
        try:
            return generate(model, prompts, rows, pad_id=pad_id)
        finally:
            model.train(was_training)
    return generate_fn


# reward(records, completion_texts) -> [B] float rewards; records are dicts with at least "prompt" (its text)
RewardFn = Callable[[Sequence[dict], Sequence[str]], torch.Tensor]
# reference(ids, attention_mask) -> [B, T-1] token log-probs under the frozen reference policy
ReferenceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reward_from_checker(check: Callable[[dict, str], float]) -> RewardFn:
    """A RewardFn from a per-sample checker `check(record, completion_text) -> float` (a verifiable reward)."""
    def reward_fn(records: Sequence[dict], completions: Sequence[str]) -> torch.Tensor:
        return torch.tensor([float(check(r, c)) for r, c in zip(records, completions, strict=True)])
    return reward_fn


def reward_from_scalar_head(reward_model: torch.nn.Module, tokenizer, pad_id: int,
                            batch_size: int = 32) -> RewardFn:
    """A RewardFn from a reward model (a ScalarHead): the score at the last token of prompt + completion, the text
    re-encoded with the reward model's own tokenizer (it need not share the policy's)."""
    reward_model.eval()

    @torch.no_grad()
    def reward_fn(records: Sequence[dict], completions: Sequence[str]) -> torch.Tensor:
        prompts = [tokenizer.encode(r["prompt"], add_special_tokens=False) for r in records]
        answers = [tokenizer.encode(c, add_special_tokens=False) or [pad_id] for c in completions]
        scores = []
        for start in range(0, len(prompts), batch_size):
            ids, attention, _ = pack(prompts[start:start + batch_size], answers[start:start + batch_size], pad_id,
                                     device_of(reward_model))
            scores.append(reward_model.last_token_scores(ids, attention).float())
        return torch.cat(scores)
    return reward_fn


@dataclass
class Rollout:
    """One batch of sampled completions. ids/attention_mask [B, T] (prompt then completion, right-padded);
    mask [B, T-1]: 1 where token_logprobs scores a completion token."""

    records: list[dict]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    rewards: torch.Tensor
    ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(c) for c in self.completion_ids], dtype=torch.float32, device=self.rewards.device)

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        rows = torch.as_tensor(rows, dtype=torch.long)
        pick = rows.tolist()
        return Rollout([self.records[i] for i in pick], [self.prompt_ids[i] for i in pick],
                       [self.completion_ids[i] for i in pick], [self.texts[i] for i in pick], self.rewards[rows],
                       self.ids[rows], self.attention_mask[rows], self.mask[rows])


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a model's weights are (its rollouts' tensors go there)."""
    return next(module.parameters()).device


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
         pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [B, T], attention_mask [B, T], completion target mask [B, T-1]) of prompt + completion, right-padded;
    built on the CPU row by row, then moved to `device` in one copy each."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    B = len(prompts)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    scored = torch.zeros((B, width), dtype=torch.float32)
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[row, :len(p) + len(c)] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attention[row, :len(p) + len(c)] = 1
        scored[row, len(p):len(p) + len(c)] = 1.0
    return ids.to(device), attention.to(device), scored[:, 1:].to(device)


def sample_rollout(records: Sequence[dict], tokenizer, generate_fn: GenerateFn, params: RolloutParams,
                   reward_fn: RewardFn, pad_id: int, device: torch.device | str = "cpu") -> Rollout:
    """Generate one completion per record, decode (special tokens kept: the checker sees the stop), score, pack;
    the rewards and packed tensors on `device` (the policy's)."""
    prompts = [tokenizer.encode(r["prompt"], add_special_tokens=False) for r in records]
    completions = [list(c) for c in generate_fn(prompts, params)]
    if len(completions) != len(prompts):
        raise ValueError(f"generate_fn returned {len(completions)} completions for {len(prompts)} prompts")
    completions = [c if c else [pad_id] for c in completions]  # an empty completion still needs a scored token
    texts = [tokenizer.decode(c, skip_special_tokens=False) for c in completions]
    rewards = torch.as_tensor(reward_fn(list(records), texts), dtype=torch.float32).reshape(-1).to(device)
    ids, attention, mask = pack(prompts, completions, pad_id, device)
    return Rollout(list(records), prompts, completions, texts, rewards, ids, attention, mask)


def reference_from_model(reference: torch.nn.Module) -> ReferenceFn:
    """The reference policy as a frozen model (a copy of the initial actor)."""
    from lmforge.train.post.logprobs import token_logprobs

    reference.eval().requires_grad_(False)

    @torch.no_grad()
    def ref(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return token_logprobs(reference, ids, attention_mask)
    return ref


def reference_adapters_disabled(actor: torch.nn.Module, disable_adapters) -> ReferenceFn:
    """Memory saver for a LoRA actor: the reference is the actor's own base with its adapters switched off.
    disable_adapters: a context-manager factory, e.g. peft's `model.disable_adapter` (the PEFT layer's hook)."""
    from lmforge.train.post.logprobs import token_logprobs

    @torch.no_grad()
    def ref(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with disable_adapters():
            return token_logprobs(actor, ids, attention_mask)
    return ref
