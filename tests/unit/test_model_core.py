"""Model core properties: config validation, presets, KV-cache consistency, masking, init, embedding resize."""

import math

import pytest
import torch

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.model import ModelConfig, Transformer, family_config, get_preset, resize_token_embeddings
from lmforge.model.rope import apply_rope, rope_cos_sin, rope_inv_freq


@pytest.mark.parametrize("bad", [dict(dim=0), dict(n_heads=3, dim=64), dict(n_kv_heads=3), dict(family="gpt9"),
                                 dict(norm="batchnorm"), dict(mlp="relu2"), dict(eos_token_id=10**6)])
def test_config_validation_names_the_field(bad):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_flat(**{**dict(vocab_size=256, dim=64, n_heads=4, ffn_dim=128), **bad})
    assert next(iter(bad)) in str(err.value)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="tiny-llama.*smollm2-135m"):
        get_preset("gpt-17")


def test_config_json_round_trip(tmp_path):
    cfg = get_preset("tiny-qwen3")
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg


def test_family_switch_sets_architecture_flags():
    assert family_config("qwen2", vocab_size=64, dim=32, n_heads=2, ffn_dim=64).attention.qkv_bias
    q3 = family_config("qwen3", vocab_size=64, dim=32, n_heads=2, ffn_dim=64)
    assert q3.attention.qk_norm and not q3.attention.qkv_bias
    llama = family_config("llama", vocab_size=64, dim=32, n_heads=2, ffn_dim=64)
    assert not (llama.attention.qk_norm or llama.attention.qkv_bias)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "smollm2-135m"])
def test_num_params_matches_module(preset):
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())


def test_smollm2_preset_is_135m():
    assert round(get_preset("smollm2-135m").num_params() / 1e6) == 135


def test_init_scales_residual_projections():
    model = Transformer(get_preset("tiny-llama", n_layers=8, dim=256, ffn_dim=512, n_heads=4))
    std = model.config.init_std
    assert model.layers[0].attn.q_proj.weight.std().item() == pytest.approx(std, rel=0.1)
    assert model.layers[0].attn.o_proj.weight.std().item() == pytest.approx(std / math.sqrt(16), rel=0.1)
    assert model.layers[0].mlp.down_proj.weight.std().item() == pytest.approx(std / math.sqrt(16), rel=0.1)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-qwen3"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_kv_cache_decode_equals_full_forward(preset, n_kv_heads):
    model = Transformer(get_preset(preset, n_kv_heads=n_kv_heads)).eval()
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = new_kv_cache(model, 2, max_len=16)
        chunks = [model(ids[:, :5], kv_cache=cache), model(ids[:, 5:9], kv_cache=cache)]  # chunked prefill
        chunks += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(9, 12)]
    assert cache.length == 12
    assert (torch.cat(chunks, dim=1) - full).abs().max() < 1e-5


def test_gpt2_style_variant_layernorm_gelu():
    """LayerNorm + GELU MLP (GPT-2 style): cache-consistent, and its MLP is the closed-form tanh-GELU MLP."""
    model = Transformer(get_preset("tiny-llama", norm="layernorm", mlp="gelu", mlp_bias=True)).eval()
    assert isinstance(model.layers[0].attn_norm, torch.nn.LayerNorm)
    mlp, x = model.layers[0].mlp, torch.randn(3, 64)
    h = mlp.up_proj(x)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    assert torch.allclose(mlp(x), mlp.down_proj(gelu), atol=1e-5)
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        full = model(ids)
        cache = new_kv_cache(model, 1, max_len=9)
        stepwise = torch.cat([model(ids[:, :4], kv_cache=cache)] + [model(ids[:, t:t + 1], kv_cache=cache)
                                                                     for t in range(4, 9)], dim=1)
    assert (stepwise - full).abs().max() < 1e-5


def test_left_padding_does_not_change_a_sequence():
    model = Transformer(get_preset("tiny-llama")).eval()
    ids = torch.randint(0, 256, (1, 8))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(ids)
        together = model(padded, attention_mask=mask)
    assert (together[:, 5:] - alone).abs().max() < 1e-5
    assert torch.isfinite(together).all()


def test_causality():
    model = Transformer(get_preset("tiny-qwen3")).eval()
    ids = torch.randint(0, 256, (1, 10))
    changed = ids.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 256
    with torch.no_grad():
        assert (model(ids)[:, :7] - model(changed)[:, :7]).abs().max() == 0


def test_rope_scores_depend_only_on_relative_position():
    inv_freq = rope_inv_freq(32, 10000.0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(pq, pk):
        cq, sq = rope_cos_sin(torch.tensor([[pq]]), inv_freq, torch.float32)
        ck, sk = rope_cos_sin(torch.tensor([[pk]]), inv_freq, torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-4)


def test_kv_cache_overflow_is_a_clear_error():
    model = Transformer(get_preset("tiny-llama")).eval()
    cache = new_kv_cache(model, 1, max_len=4)
    with pytest.raises(LmforgeError, match="KV cache full"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("tie", [True, False])
def test_resize_token_embeddings(tie):
    model = Transformer(get_preset("tiny-llama", tie_embeddings=tie)).eval()
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        before = model(ids)
        old_embed = model.embed.weight.clone()
    resize_token_embeddings(model, 260)
    assert model.config.vocab_size == 260 and model.embed.weight.shape == (260, 64)
    assert model.lm_head.weight.shape == (260, 64) and (model.lm_head.weight is model.embed.weight) == tie
    assert torch.allclose(model.embed.weight[256], old_embed.mean(0), atol=1e-6)
    with torch.no_grad():
        after = model(ids)
        new_ids_logits = model(torch.tensor([[257, 3]]))
    assert (after[..., :256] - before).abs().max() < 1e-6  # old tokens unchanged
    assert new_ids_logits.shape == (1, 2, 260)
    with pytest.raises(LmforgeError):
        resize_token_embeddings(model, 0)
