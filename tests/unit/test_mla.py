"""MLA: the absorbed computation equals the naive one, with and without the latent cache, which holds only c_kv."""

import pytest
import torch

from lmforge.generation.cache import MLACache, new_kv_cache
from lmforge.model import Transformer, get_preset
from lmforge.model.mla import MLAttention


def _model(mode: str, **overrides) -> Transformer:
    torch.manual_seed(0)
    cfg = get_preset("tiny-deepseek-v3", mla_mode=mode, **overrides)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # norms and biases off their constant init so every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _set_mode(model: Transformer, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, MLAttention):
            m.mode = mode


@pytest.mark.parametrize("q_lora_rank", [32, None])
def test_absorbed_equals_naive_full_forward(q_lora_rank):
    model = _model("naive", q_lora_rank=q_lora_rank)
    ids = torch.randint(0, 256, (2, 21))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    with torch.no_grad():
        naive, naive_pad = model(ids), model(ids, attention_mask=mask)
        _set_mode(model, "absorbed")
        absorbed, absorbed_pad = model(ids), model(ids, attention_mask=mask)
    assert (naive - absorbed).abs().max() <= 1e-5
    assert (naive_pad - absorbed_pad)[mask.bool()].abs().max() <= 1e-5
    assert naive.std() > 0.1  # not a degenerate model


@pytest.mark.parametrize("mode", ["naive", "absorbed", "auto"])
def test_cached_decode_equals_full_forward(mode):
    model = _model(mode)
    ids = torch.randint(0, 256, (2, 15))
    with torch.no_grad():
        full = model(ids)
        _set_mode(model, "naive")
        reference = model(ids)
        _set_mode(model, mode)
        cache = new_kv_cache(model, 2, max_len=32)
        assert isinstance(cache, MLACache)
        steps = [model(ids[:, :9], kv_cache=cache)] + [model(ids[:, t:t + 1], kv_cache=cache) for t in range(9, 15)]
    assert (torch.cat(steps, dim=1) - reference).abs().max() <= 1e-5
    assert (full - reference).abs().max() <= 1e-5


def test_cache_holds_only_latent_and_rope_key():
    cfg = get_preset("tiny-deepseek-v3")
    cache = new_kv_cache(Transformer(cfg), 1, max_len=10)
    per_token = sum(t[0, 0, 0].numel() for t in (cache.latent, cache.k_rope))
    assert per_token == cfg.attention.kv_lora_rank + cfg.attention.qk_rope_head_dim
    assert per_token < 2 * cfg.n_heads * cfg.attention.v_head_dim  # what a per-head K/V cache would store


def test_mla_needs_valid_fields():
    from lmforge.common.errors import ConfigError

    with pytest.raises(ConfigError, match="qk_rope_head_dim"):
        get_preset("tiny-deepseek-v3", qk_rope_head_dim=7)
    with pytest.raises(ConfigError, match="attention"):
        get_preset("tiny-llama", attention="flash")
