"""Rolling-buffer KV cache: decoding far past the window equals a full forward, with memory fixed at the window."""

import pytest
import torch

from lmforge.generation.cache import RollingKVCache, all_layers_sliding
from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model.presets import get_preset
from tests.context_lm import assert_context_dependent, assert_not_constant, context_model, naive_greedy


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread hand-offs cost more than the maths (and the CI machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mistral():
    return context_model("tiny-mistral")  # sliding_window 16 on every layer; greedy output depends on context


@pytest.mark.parametrize("chunk", [1, 7])
def test_cached_decoding_past_several_windows_equals_full_forward(mistral, chunk):
    ids = torch.randint(0, 256, (2, 100))
    with torch.no_grad():
        full = mistral(ids)  # no cache: the sliding-window mask over all 100 positions
        cache = RollingKVCache.for_model(mistral, 2)
        outs = [mistral(ids[:, :40], positions=cache.positions(40), kv_cache=cache)]  # prefill longer than W
        for start in range(40, 100, chunk):
            piece = ids[:, start:start + chunk]
            outs.append(mistral(piece, positions=cache.positions(piece.shape[1]), kv_cache=cache))
            assert cache.k.shape[3] == cache.v.shape[3] == 16  # memory stays at the window
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-4, rtol=1e-4)
    assert cache.length == 100


def test_generate_uses_bounded_cache_and_matches_naive_greedy(mistral):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    out = generate(mistral, [prompt], SamplingParams(temperature=0, max_new_tokens=50))[0]
    expected = naive_greedy(mistral, prompt, 50)  # a full forward (sliding-window mask) at every step, no cache
    assert_not_constant(expected[16:])  # past the window too
    assert_context_dependent(mistral, prompt)
    assert out == expected


def test_only_all_sliding_models_qualify():
    assert all_layers_sliding(get_preset("tiny-mistral"))
    assert not all_layers_sliding(get_preset("tiny-llama"))
    assert not all_layers_sliding(get_preset("tiny-gemma3"))  # 5 sliding layers of 6: the full one needs it all
