"""The decode-attention kernel on the contiguous KV cache (csrc/cached_attention.cpp): RoPE of the queries and new
keys as the eager code rounds them, the new entries written where KVCache.update writes them (nothing else touched),
and attention over the cache as a float64 computation gives it, causal across several new tokens."""

import pytest
import torch

from lmforge.model.rope import apply_rope, rope_cos_sin, rope_inv_freq

LAYERS, MAX_LEN = 2, 80


def eager(qkv, cos, sin, k_cache, v_cache, layer, start, heads):
    """What Attention.forward and KVCache.update do: split, rotate, write, then attention in float64."""
    _, T, width = qkv.shape
    H_kv, D = k_cache.shape[2], k_cache.shape[4]
    q, k, v = qkv.split([heads * D, H_kv * D, H_kv * D], dim=-1)
    q, k, v = (t.view(1, T, -1, D).transpose(1, 2) for t in (q, k, v))
    if cos is not None:
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    k_cache[layer, :, :, start:start + T], v_cache[layer, :, :, start:start + T] = k, v
    keys = k_cache[layer, 0, :, :start + T].double().repeat_interleave(heads // H_kv, 0)  # [H, L, D]
    values = v_cache[layer, 0, :, :start + T].double().repeat_interleave(heads // H_kv, 0)
    scores = torch.einsum("htd,hld->htl", q[0].double(), keys) * D ** -0.5
    causal = torch.arange(start + T)[None, :] <= torch.arange(start, start + T)[:, None]  # [T, L]
    p = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    out = torch.einsum("htl,hld->thd", p, values).reshape(1, T, heads * D)
    return out, q, k_cache, v_cache


def same(got, want, exact):
    if exact:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads, width", [(9, 3, 64), (4, 2, 16), (2, 1, 80)])
@pytest.mark.parametrize("start, tokens, rope", [(0, 1, True), (70, 1, True), (5, 3, True), (40, 1, False)])
def test_kernel_matches_the_eager_attention_and_cache_write(ops, dtype, tol, heads, kv_heads, width, start, tokens,
                                                            rope):
    gen = torch.Generator().manual_seed(0)
    shape = (LAYERS, 1, kv_heads, MAX_LEN, width)
    k_cache, v_cache = (torch.randn(shape, generator=gen).to(dtype) for _ in range(2))
    qkv = (torch.randn(1, tokens, (heads + 2 * kv_heads) * width, generator=gen) * 2).to(dtype)
    cos = sin = None
    if rope:
        cos, sin = rope_cos_sin(torch.arange(start, start + tokens)[None], rope_inv_freq(width, 10000.0), dtype)
    layer = 1
    want, q_rotated, k_want, v_want = eager(qkv, cos, sin, k_cache, v_cache, layer, start, heads)
    keys, values = k_cache.clone(), v_cache.clone()
    out = ops.cached_attention(qkv, cos, sin, keys, values, layer, start, heads, width ** -0.5)
    assert out.shape == (1, tokens, heads * width) and out.dtype == dtype
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
    # the cache holds the eager code's numbers (bf16 RoPE bit for bit), written at start.., nothing else changed
    exact = dtype == torch.bfloat16 or not rope  # float32 RoPE: to float rounding (a product may fuse into an FMA)
    same(keys, k_want, exact)
    assert torch.equal(values, v_want)
    q_kernel = qkv[..., :heads * width].view(1, tokens, heads, width).transpose(1, 2)  # rotated in place
    same(q_kernel, q_rotated, exact)


def test_bad_inputs_are_refused_with_clear_errors(ops):
    k, v = torch.zeros(2, 1, 2, 8, 16), torch.zeros(2, 1, 2, 8, 16)
    qkv = torch.zeros(1, 1, 8 * 16)  # 4 query heads + 2 + 2
    ops.cached_attention(qkv, None, None, k, v, 1, 7, 4, 0.25)  # the last position: fits
    with pytest.raises(RuntimeError, match="outside the cache"):
        ops.cached_attention(qkv, None, None, k, v, 1, 8, 4, 0.25)
    with pytest.raises(RuntimeError, match="outside the cache"):
        ops.cached_attention(qkv, None, None, k, v, 2, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="heads a multiple of H_kv"):
        ops.cached_attention(qkv, None, None, k, v, 0, 0, 3, 0.25)
    with pytest.raises(RuntimeError, match="contiguous \\[layers, 1, H_kv, S, D\\]"):
        ops.cached_attention(qkv, None, None, torch.zeros(2, 2, 2, 8, 16), torch.zeros(2, 2, 2, 8, 16), 0, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="one dtype"):
        ops.cached_attention(qkv.bfloat16(), None, None, k, v, 0, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="both cos and sin"):
        ops.cached_attention(qkv, torch.zeros(1, 1, 16), None, k, v, 0, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="cos and sin must be contiguous \\[1, T, D\\]"):
        ops.cached_attention(qkv, torch.zeros(1, 2, 16), torch.zeros(1, 2, 16), k, v, 0, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="multiple of"):
        ops.cached_attention(torch.zeros(1, 1, 8 * 12), None, None, torch.zeros(2, 1, 2, 8, 12),
                             torch.zeros(2, 1, 2, 8, 12), 0, 0, 4, 0.25)
