"""What the RL commands (ppo, grpo, rs) share: the engine-backed generate function handed to the training code
(train never imports the engine), the embedded verifiable task, and the before/after evaluation and export.
"""

from __future__ import annotations

import torch

from lmforge.engine.generate import generate
from lmforge.engine.sampling_params import SamplingParams
from lmforge.train.post.rollout import GenerateFn, RolloutParams


def engine_generate_fn(model: torch.nn.Module, stop_token_ids: list[int], pad_id: int) -> GenerateFn:
    """A GenerateFn on lmforge.engine.generate: row i of a call samples with seed + i, so the G samples of a
    group differ while the whole rollout stays reproducible."""
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
