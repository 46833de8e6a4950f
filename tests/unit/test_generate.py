"""Minimal generation: greedy equals transformers' greedy, batching equals one-by-one, stops and seeds work."""

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.engine.generate import generate, sample
from lmforge.model import Transformer, get_preset
from lmforge.model.loader import load
from tests.hf_models import tiny_hf_model


def test_greedy_equals_transformers_generate(tmp_path):
    ref = tiny_hf_model("qwen2", tie=False)
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    prompt = torch.randint(0, 256, (1, 7))
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=20,
                                pad_token_id=0, eos_token_id=None)[0, 7:].tolist()
    assert generate(lm.model, [prompt[0].tolist()], max_new_tokens=20) == [expected]


def test_batched_generation_equals_single():
    model = Transformer(get_preset("tiny-llama")).eval()
    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]
    batched = generate(model, prompts, max_new_tokens=12)
    single = [generate(model, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single


def test_stop_token_ends_each_sequence_independently():
    model = Transformer(get_preset("tiny-llama")).eval()
    prompts = [[5, 6, 7], [9, 9]]
    free = generate(model, prompts, max_new_tokens=10)
    stop = free[0][3]
    stopped = generate(model, prompts, max_new_tokens=10, stop_token_ids=[stop])
    first = free[0].index(stop)
    assert stopped[0] == free[0][:first + 1]
    cut = free[1].index(stop) + 1 if stop in free[1] else 10
    assert stopped[1] == free[1][:cut]


def test_seeded_sampling_is_reproducible_and_temperature_matters():
    model = Transformer(get_preset("tiny-llama")).eval()
    a = generate(model, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=7)
    b = generate(model, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=7)
    c = generate(model, [[1, 2, 3]], max_new_tokens=16, temperature=1.0, seed=8)
    assert a == b and a != c


def test_sample_distribution_follows_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample(logits, 1.0, gen) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.03)
    assert sample(logits, 0.0).item() == 2


def test_generation_errors():
    model = Transformer(get_preset("tiny-llama")).eval()
    with pytest.raises(LmforgeError, match="context"):
        generate(model, [[1] * 200], max_new_tokens=100)
    with pytest.raises(LmforgeError, match="at least one token"):
        generate(model, [[]], max_new_tokens=3)
    with pytest.raises(LmforgeError, match="temperature"):
        generate(model, [[1]], max_new_tokens=3, temperature=-1.0)
