"""RoPE scaling equals transformers' ROPE_INIT_FUNCTIONS; RoPE scores depend only on relative offsets (property)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.common.errors import ConfigError
from lmforge.model import ModelConfig
from lmforge.model.rope import apply_rope, rope_cos_sin, rope_inv_freq
from lmforge.model.rope_scaling import llama3_from_freq_factors, ntk_base, scaled_inv_freq

HEAD_DIM, THETA, MAX_POS = 64, 10000.0, 2048

CASES = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 1024, "beta_fast": 16, "beta_slow": 2},
    {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
     "mscale_all_dim": 0.707},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512, "attention_factor": 1.3},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 1024},
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
     "original_max_position_embeddings": 512},
]


def _hf(params: dict, seq_len=None):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(hidden_size=HEAD_DIM * 4, num_attention_heads=4, head_dim=HEAD_DIM,
                                      max_position_embeddings=MAX_POS,
                                      rope_parameters={**params, "rope_theta": THETA})
    return ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("params", CASES, ids=lambda p: p["rope_type"])
def test_inv_freq_and_attention_factor_equal_transformers(params):
    ours, factor = scaled_inv_freq(HEAD_DIM, THETA, dict(params), MAX_POS)
    theirs, their_factor = _hf(dict(params))
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-6, atol=0)
    assert factor == pytest.approx(their_factor, rel=1e-12)


@pytest.mark.parametrize("seq_len", [100, 2048, 3000, 10000])
def test_dynamic_ntk_follows_the_sequence_length(seq_len):
    params = {"rope_type": "dynamic", "factor": 2.0}
    ours, _ = scaled_inv_freq(HEAD_DIM, THETA, params, MAX_POS, seq_len=seq_len)
    theirs, _ = _hf(params, seq_len=seq_len)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-6, atol=0)


def test_static_ntk_is_dynamic_ntk_at_the_matching_length():
    # dynamic NTK at length L' uses alpha = f L'/L - (f - 1); the static NTK-aware base with that alpha is equal
    seq_len, f = 6144, 2.0
    alpha = f * seq_len / MAX_POS - (f - 1)
    static, _ = scaled_inv_freq(HEAD_DIM, THETA, {"rope_type": "ntk", "factor": alpha}, MAX_POS)
    theirs, _ = _hf({"rope_type": "dynamic", "factor": f}, seq_len=seq_len)
    torch.testing.assert_close(static, theirs.float(), rtol=1e-6, atol=0)
    assert ntk_base(THETA, alpha, HEAD_DIM) == pytest.approx(THETA * alpha ** (HEAD_DIM / (HEAD_DIM - 2)))
    # the highest frequency barely moves, the lowest is divided by ~alpha
    assert static[0] == 1.0 and static[-1] / rope_inv_freq(HEAD_DIM, THETA)[-1] == pytest.approx(1 / alpha, rel=0.1)


def test_llama3_parameters_are_recovered_from_gguf_freq_factors():
    params = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    scaled, _ = scaled_inv_freq(128, 500000.0, params, 131072)
    factors = (rope_inv_freq(128, 500000.0) / scaled).tolist()
    assert llama3_from_freq_factors(factors, 128, 500000.0) == params
    assert llama3_from_freq_factors([1.0] * 63 + [3.0], 128, 500000.0) is None
    via_factors, _ = scaled_inv_freq(128, 500000.0, {"rope_type": "freq_factors", "factors": factors}, 131072)
    torch.testing.assert_close(via_factors, scaled, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [{"rope_type": "magic", "factor": 2.0}, {"rope_type": "linear"},
                                 {"rope_type": "linear", "factor": -1.0}, {"rope_type": "linear", "factor": 2, "x": 1},
                                 {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1}])
def test_bad_rope_scaling_is_named(bad):
    with pytest.raises(ConfigError, match="rope_scaling"):
        ModelConfig.from_flat(vocab_size=64, dim=32, n_heads=2, ffn_dim=64, rope_scaling=bad)


def _scores(q, k, pos_q, pos_k, inv_freq):
    """q.k after rotating q to pos_q and k to pos_k (single head, [D] vectors)."""
    cos_q, sin_q = rope_cos_sin(torch.tensor([[pos_q]]), inv_freq, torch.float64)
    cos_k, sin_k = rope_cos_sin(torch.tensor([[pos_k]]), inv_freq, torch.float64)
    rq = apply_rope(q[None, None, None].double(), cos_q, sin_q)
    rk = apply_rope(k[None, None, None].double(), cos_k, sin_k)
    return float((rq * rk).sum())


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(0, 5000), shift=st.integers(0, 5000), offset=st.integers(-200, 200), seed=st.integers(0, 99),
       kind=st.sampled_from([None, {"rope_type": "linear", "factor": 4.0},
                             {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512}]))
def test_rope_scores_depend_only_on_relative_offset(pos, shift, offset, seed, kind):
    """For any RoPE frequencies, q.k at (m, n) equals q.k at (m + s, n + s)."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(32, generator=g), torch.randn(32, generator=g)
    inv_freq = scaled_inv_freq(32, 10000.0, kind, 1024)[0].double()
    m, n = pos + max(offset, 0), pos + max(-offset, 0)
    a = _scores(q, k, m, n, inv_freq)
    b = _scores(q, k, m + shift, n + shift, inv_freq)
    assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
