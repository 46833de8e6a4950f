"""Chi-square check that speculative sampling keeps the target's distribution of the first generated tokens,
shared by the speculative-decoding tests of every draft (model, MTP head)."""

import itertools

import torch
from scipy.stats import chisquare

from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.speculative import speculative_generate


@torch.no_grad()
def target_joint(target, prompt: list[int], n: int, temperature: float) -> torch.Tensor:
    """[V^n] the target's probability of each sequence of n first tokens (enumerated, one batch per depth)."""
    V = target.config.vocab_size
    joint = torch.ones(1)
    for depth in range(n):
        prefixes = torch.tensor([prompt + list(p) for p in itertools.product(range(V), repeat=depth)])
        step = torch.softmax(target(prefixes)[:, -1] / temperature, -1)  # [V^depth, V]
        joint = (joint[:, None] * step).flatten()
    return joint


def sampled_counts(target, prompt: list[int], draft, n: int, temperature: float, runs: int,
                   num_draft: int) -> torch.Tensor:
    """[V^n] how often speculative sampling (seeds 0..runs-1) produced each sequence of n first tokens."""
    V = target.config.vocab_size
    counts = torch.zeros(V ** n)
    for seed in range(runs):
        out = speculative_generate(target, prompt, draft, SamplingParams(temperature=temperature, max_new_tokens=n,
                                                                         seed=seed), num_draft=num_draft)
        counts[sum(t * V ** (n - 1 - i) for i, t in enumerate(out.tokens[:n]))] += 1
    return counts


def pooled_chisquare(counts: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, float]:
    """(p-value, observed and expected counts of the pooled rare cells): cells expected < 5 times are pooled."""
    runs = float(counts.sum())
    keep = expected * runs >= 5  # chi-square needs expected counts >= 5; pool the rare cells
    pooled = [counts[~keep].sum()[None]] if (~keep).any() else []
    obs = torch.cat([counts[keep], *pooled]).double()
    exp = torch.cat([expected[keep], *([expected[~keep].sum()[None]] if pooled else [])]).double() * runs
    exp = exp * obs.sum() / exp.sum()  # float32 rounding of the softmax
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue), float(counts[~keep].sum()), \
        float(expected[~keep].sum() * runs)
