"""The static-shape KV cache (gpt-fast): written at tensor positions, it decodes what the growing cache decodes, its
shapes never change (so a compiled step is captured once), and it refuses what it cannot hold."""

import functools

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.cache import StaticKVCache, new_kv_cache
from lmforge.generation.generate import decode, generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.step import decode_step
from tests.context_lm import assert_not_constant, context_model, naive_greedy


def test_static_cache_decodes_like_the_growing_cache():
    model = context_model()
    prompt = [5, 17, 99, 3, 42, 7]
    expected = naive_greedy(model, prompt, 16)
    assert_not_constant(expected)
    cache = new_kv_cache(model, 1, max_len=len(prompt) + 16, static=True)
    assert isinstance(cache, StaticKVCache)
    shapes = (cache.k.shape, cache.v.shape)
    with torch.no_grad():  # step by step on one static cache: same tokens, same buffers, position as a tensor
        logits = model(torch.tensor([prompt]), kv_cache=cache, last_only=True)[:, -1]
        tokens = []
        for _ in range(16):
            tokens.append(int(logits.argmax()))
            logits = model(torch.tensor([[tokens[-1]]]), kv_cache=cache)[:, -1]
    assert tokens == expected
    assert (cache.k.shape, cache.v.shape) == shapes and cache.length == len(prompt) + 16
    cache.truncate(len(prompt))  # speculative-style rollback: the same continuation again
    with torch.no_grad():
        again = model(torch.tensor([expected[:4]]), kv_cache=cache)[0].argmax(-1).tolist()
    assert again == expected[1:5]


def test_static_cache_refuses_what_it_cannot_hold():
    with pytest.raises(LmforgeError, match="full attention on every layer and no MLA"):
        new_kv_cache(context_model("tiny-llama", sliding_window=4), 1, max_len=8, static=True)
    model = context_model()
    cache = new_kv_cache(model, 1, max_len=8, static=True)
    with pytest.raises(LmforgeError, match="takes no attention_mask"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 2, dtype=torch.long), kv_cache=cache)
    with pytest.raises(LmforgeError, match="static KV cache full"):
        cache.check_room(9)


def test_the_decode_step_is_captured_once_on_the_static_cache_and_recompiles_on_the_growing_one():
    """torch.compile traces generation's decode_step (the one model_step of decoding) once (fullgraph, no
    recompilation at later positions) on the static cache; the growing KVCache's Python-int length makes it
    recompile. aot_eager: the capture without inductor's C++ build (decode(compile=True) uses inductor;
    benchmarks/decode_compile.py times it)."""
    model = context_model()
    prompt = [5, 17, 99, 3]
    expected = naive_greedy(model, prompt, 8)
    assert_not_constant(expected)
    torch._dynamo.reset()
    step = functools.partial(torch.compile(decode_step, backend="aot_eager", fullgraph=True), model)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert decode(model, prompt, max_new_tokens=8, compile=True, step=step) == expected
        assert decode(model, prompt, max_new_tokens=8, compile=True, step=step) == expected  # a new cache, same graph
        with pytest.raises(Exception, match="[Rr]ecompil"):
            decode(model, prompt, max_new_tokens=8, step=step)  # the growing cache
    torch._dynamo.reset()


def test_the_generate_loop_decodes_a_batch_on_the_static_cache_and_refuses_padding():
    """generate(compile=True) runs the one decode loop on a static cache: a row that stops early feeds padding
    with no mask (the static cache masks by position) and the other row's tokens stay those of the growing cache;
    prompts of different lengths are a one-line error (the static cache takes no padding mask)."""
    model = context_model()
    prompts = [[5, 17, 99, 3], [8, 2, 61, 40]]
    expected = generate(model, prompts, max_new_tokens=10, temperature=0)
    assert all(len(set(row)) > 1 for row in expected)
    stop = expected[0][3]  # row 0 stops after 4 tokens, row 1 goes on
    params = SamplingParams(max_new_tokens=10, stop_token_ids=(stop,))
    eager = generate(model, prompts, params)
    assert len(eager[0]) < 10 and eager[0] == expected[0][:eager[0].index(stop) + 1]
    step = functools.partial(torch.compile(decode_step, backend="aot_eager", fullgraph=True), model)
    torch._dynamo.reset()
    try:
        assert generate(model, prompts, params, compile=True, step=step) == eager
    finally:
        torch._dynamo.reset()
    with pytest.raises(LmforgeError, match="prompts of one length"):
        generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=2, compile=True)
