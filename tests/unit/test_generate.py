"""Minimal generation: greedy equals transformers' greedy, batching equals one-by-one, stops and seeds work."""

import pytest
import torch
from scipy.stats import chisquare

from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import load
from lmforge.generation.generate import generate
from lmforge.generation.sampling import sample
from tests.context_lm import assert_context_dependent, assert_not_constant, naive_greedy
from tests.hf_models import tiny_hf_model


def test_greedy_equals_transformers_generate(tmp_path):
    ref = tiny_hf_model("qwen2", tie=False, noise=0.3)
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    prompt = torch.randint(0, 256, (1, 7))
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=20,
                                pad_token_id=0, eos_token_id=None)[0, 7:].tolist()
    assert_not_constant(expected)
    assert generate(lm.model, [prompt[0].tolist()], max_new_tokens=20) == [expected]


def test_batched_generation_equals_single(context_llama):
    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]  # left padding of 6, 0 and 8 tokens
    batched = generate(context_llama, prompts, max_new_tokens=12)
    single = [generate(context_llama, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert single == [naive_greedy(context_llama, p, 12) for p in prompts]  # the cache path against no cache
    for out in single:
        assert_not_constant(out)
    assert len({tuple(out) for out in single}) == 3
    assert_context_dependent(context_llama, prompts[1])


def test_stop_token_ends_each_sequence_independently(context_llama):
    prompts = [[5, 6, 7], [9, 9]]
    free = generate(context_llama, prompts, max_new_tokens=10)
    assert_not_constant(free[0])
    stop = free[0][3]
    stopped = generate(context_llama, prompts, max_new_tokens=10, stop_token_ids=[stop])
    first = free[0].index(stop)
    assert stopped[0] == free[0][:first + 1] and len(stopped[0]) < 10
    cut = free[1].index(stop) + 1 if stop in free[1] else 10
    assert stopped[1] == free[1][:cut]


def test_seeded_sampling_is_reproducible_and_temperature_matters(context_llama):
    a = generate(context_llama, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=7)
    b = generate(context_llama, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=7)
    c = generate(context_llama, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=8)
    assert a == b and a != c


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_distribution_follows_softmax(temperature):
    """Chi-square over 50,000 draws: a temperature 10% off gives p < 1e-12 here, 5% off p < 1e-3."""
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    n = 50_000
    draws = sample(logits.expand(n, 3), temperature, torch.Generator().manual_seed(0))
    expected = torch.softmax(logits[0].double() / temperature, -1) * n
    assert chisquare(torch.bincount(draws, minlength=3).numpy(), expected.numpy()).pvalue > 0.01
    assert sample(logits, 0.0).item() == 2


def test_generation_errors(context_llama):
    model = context_llama
    with pytest.raises(LmforgeError, match="context"):
        generate(model, [[1] * 200], max_new_tokens=100)
    with pytest.raises(LmforgeError, match="at least one token"):
        generate(model, [[]], max_new_tokens=3)
    with pytest.raises(LmforgeError, match="temperature"):
        generate(model, [[1]], max_new_tokens=3, temperature=-1.0)
