"""Tiny random models whose greedy output depends on the whole context, and the checks that a test's reference does.

At the default init (std 0.02) a tiny tied-embedding model repeats its last input token whatever it attends to
(`[7] * 12`), so a greedy-equality test passes with a broken KV cache, shifted positions or a lost padding mask.
At std 0.3 attention and MLP outweigh the token's own embedding: every earlier token and every relative position
changes the continuation. Each greedy-equality test asserts that its reference is such an output
(`assert_not_constant`, `assert_context_dependent`) and, where the compared paths share the cache code, checks one
of them against `naive_greedy` (a full forward per token, no cache at all).
"""

import copy
import functools
from collections.abc import Sequence

import torch

from lmforge.model import Transformer, get_preset

CONTEXT_STD = 0.3  # 0.2 and up: continuations of 24 tokens hold 11-19 distinct tokens (0.02: one)


@functools.cache
def _built(preset: str, seed: int, overrides: tuple) -> Transformer:
    with torch.random.fork_rng():  # the caller's random stream does not depend on whether this was cached
        torch.manual_seed(seed)
        return Transformer(get_preset(preset, **{"init_std": CONTEXT_STD, **dict(overrides)})).eval()


def context_model(preset: str = "tiny-llama", seed: int = 0, **overrides) -> Transformer:
    """A fresh eval-mode copy (tests may quantize or prepare it) of a tiny model initialised with std 0.3."""
    return copy.deepcopy(_built(preset, seed, tuple(sorted(overrides.items()))))


@torch.no_grad()
def naive_greedy(model, prompt: Sequence[int], n: int) -> list[int]:
    """n greedy tokens from a full forward over the whole sequence at every step: no KV cache, no mask, no padding."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def assert_not_constant(tokens: Sequence[int], min_distinct: int = 3) -> None:
    """A reference output a broken cache could not reproduce by repeating one token."""
    tokens = list(tokens)
    assert len(set(tokens)) >= min(min_distinct, len(tokens)), (
        f"reference output {tokens} is (nearly) constant: a greedy-equality test on it cannot fail")


def assert_context_dependent(model, prompt: Sequence[int], n: int = 8) -> None:
    """Changing only the first prompt token (same length, same last token) changes the greedy continuation."""
    prompt = list(prompt)
    assert len(prompt) >= 2, "needs a prompt of at least two tokens"
    other = [(prompt[0] + 1) % model.config.vocab_size] + prompt[1:]
    a, b = naive_greedy(model, prompt, n), naive_greedy(model, other, n)
    assert a != b, f"the continuation {a} of {prompt} ignores every token but the last"


@torch.no_grad()
def assert_greedy_up_to_ties(model, prompt: Sequence[int], tokens: Sequence[int], tol: float) -> None:
    """Each token is the argmax of a full forward over prompt + the tokens before it, up to `tol` (near-ties in
    low precision may go either way; a wrong position or cache moves the choice far from the maximum)."""
    seq = list(prompt) + list(tokens)
    logits = model(torch.tensor([seq]))[0, len(prompt) - 1:-1].float()
    chosen = logits.gather(1, torch.tensor(list(tokens))[:, None])[:, 0]
    deficit = logits.max(-1).values - chosen
    assert deficit.max() <= tol, f"step {int(deficit.argmax())} chose a token {deficit.max():.3f} below the argmax"
