"""The calculator against independent references: built modules' numel, transformers' models, published sizes,
closed forms written out here, torch's FlopCounterMode, real KV-cache tensors and the ZeRO / Korthikanti formulas."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmforge.calc.calc import calc_report, flops_per_token, kv_bytes_per_token, kv_comparison, params_summary
from lmforge.calc.calc_memory import layer_activation_bytes, zero_model_states
from lmforge.generation.cache import new_kv_cache
from lmforge.model.presets import family_config, get_preset, preset_names
from lmforge.model.transformer import Transformer
from tests.cli_util import run_cli

TINY = [name for name in preset_names() if name.startswith("tiny-")]


def component_of(name: str) -> str:
    """Which calculator component a built parameter belongs to, from its module path."""
    if name.startswith(("embed.", "extras.pos_embed", "extras.type_embed")):
        return "embedding"
    if name.startswith(("lm_head.", "head_transform.dense")):
        return "lm_head"
    if ".attn." in name:
        return "attention"
    if ".mlp.experts." in name:
        return "routed_experts"
    if ".mlp.shared." in name:
        return "shared_experts"
    if ".mlp.router." in name:
        return "routers"
    if ".mlp." in name:
        return "dense_mlp"
    assert "norm" in name, name
    return "norms"


@pytest.mark.parametrize("preset", TINY)
def test_components_match_built_model(preset):
    cfg = get_preset(preset)
    model = Transformer(cfg)
    built = dict.fromkeys(params_summary(cfg)["components"], 0)
    for name, p in model.named_parameters():  # tied lm_head appears once, as embed.weight
        built[component_of(name)] += p.numel()
    for name, b in model.named_buffers():
        if name.endswith("score_bias"):  # DeepSeek-V3's router correction bias is stored in checkpoints
            built["routers"] += b.numel()
    summary = params_summary(cfg)
    assert summary["components"] == built
    assert summary["total"] == sum(built.values()) == cfg.num_params()
    assert abs(summary["total"] / sum(p.numel() for p in model.parameters()) - 1) < 0.01


def test_params_match_transformers_models():
    from transformers import LlamaConfig, LlamaForCausalLM

    for name in ("llama-3-8b", "smollm2-135m"):
        cfg = get_preset(name)
        hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.attention.n_kv_heads, tie_word_embeddings=cfg.tie_embeddings)
        with torch.device("meta"):
            model = LlamaForCausalLM(hf)
        assert params_summary(cfg)["total"] == sum(p.numel() for p in model.parameters()), name


def test_published_sizes():
    v3 = params_summary(get_preset("deepseek-v3"))
    assert abs(v3["total"] / 671e9 - 1) < 0.01
    # 37B active as published lies between the count without the embedding lookup and with it.
    assert v3["non_embedding_active"] < 37e9 < v3["active"] and abs(v3["active"] / 37e9 - 1) < 0.02
    assert abs(params_summary(get_preset("llama-3-8b"))["total"] / 8.03e9 - 1) < 0.01
    assert abs(params_summary(get_preset("smollm2-135m"))["total"] / 134.5e6 - 1) < 0.01
    qwen = params_summary(get_preset("qwen3-30b-a3b"))
    assert abs(qwen["total"] / 30.5e9 - 1) < 0.01 and abs(qwen["active"] / 3.3e9 - 1) < 0.02


def test_kv_cache_mla_smaller_than_gqa_smaller_than_mha():
    cfg = get_preset("deepseek-v3")
    rows = {k: v["bytes_per_token"] for k, v in kv_comparison(cfg).items()}
    print("deepseek-v3 KV bytes/token (bf16):", rows)
    assert rows["MLA"] < rows["GQA"] < rows["MHA"]
    assert rows["MLA"] == kv_bytes_per_token(cfg) == 61 * (512 + 64) * 2
    assert rows["MHA"] == 61 * 2 * 128 * 192 * 2 - 61 * 128 * 64 * 2  # K: 128 x 192, V: 128 x 128, bf16


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-deepseek-v3", "tiny-qwen3"])
def test_kv_bytes_match_real_cache(preset):
    cfg = get_preset(preset)
    cache = new_kv_cache(Transformer(cfg), batch_size=1, max_len=32, dtype=torch.bfloat16)
    tensors = [t for t in vars(cache).values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert sum(t.numel() * t.element_size() for t in tensors) / 32 == kv_bytes_per_token(cfg, "bf16")


def test_flops_closed_form():
    L, d, h, kv, hd, f, V, T = 3, 96, 6, 2, 16, 160, 300, 50
    cfg = family_config("llama", vocab_size=V, dim=d, n_layers=L, n_heads=h, n_kv_heads=kv, ffn_dim=f)
    n = L * (2 * d * h * hd + 2 * d * kv * hd + 3 * d * f + 2 * d) + d + V * d  # tied head is still a matmul
    got = flops_per_token(cfg, T)
    assert got["forward"] == 2 * n + L * 4 * h * hd * T
    assert got["training"] == 6 * n + 12 * L * h * hd * T  # PaLM appendix B: 6N + 12 L H Q T
    assert got["inference"] == got["forward"]
    window = flops_per_token(get_preset("tiny-mistral"), 64)  # sliding window 16 caps the context
    assert window["attention_forward"] == 2 * 4 * 16 * 2 * 16 * 2


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-moe", "tiny-deepseek-v3"])
def test_flops_match_flop_counter(preset):
    """FlopCounterMode counts every matmul, attention's too on SDPA's math backend (norms are elementwise, so
    their weights are left out): forward + backward must match the training FLOPs per token."""
    cfg = get_preset(preset)
    model = Transformer(cfg)
    B, T = 2, 32
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(torch.randint(0, cfg.vocab_size, (B, T))).sum().backward()
    norms = params_summary(cfg)["active_components"]["norms"]
    expected = (flops_per_token(cfg, T)["training"] - 6 * norms) * B * T
    assert abs(counter.get_total_flops() / expected - 1) < 0.03, (counter.get_total_flops(), expected)


def test_attention_flops_match_flop_counter_on_eager_attention():
    cfg = get_preset("tiny-llama")
    B, T, H, hd = 1, 40, cfg.n_heads, cfg.resolved_head_dim
    q, k, v = (torch.randn(B, H, T, hd, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        ((q @ k.transpose(-1, -2)).softmax(-1) @ v).sum().backward()
    per_layer = flops_per_token(cfg, T)["attention_forward"] / cfg.n_layers * 3  # training = 3 x forward
    assert counter.get_total_flops() == per_layer * B * T


def test_zero_stages_follow_the_paper():
    psi, n = 7_500_000_000, 64  # the ZeRO paper's 7.5B example over 64 GPUs
    totals = [zero_model_states(psi, s, n)["total"] for s in range(4)]
    assert totals == [16 * psi, 4 * psi + 12 * psi / n, 2 * psi + 14 * psi / n, 16 * psi / n]
    assert totals[0] > totals[1] > totals[2] > totals[3]
    assert round(totals[0] / 1e9) == 120 and round(totals[3] / 1e9, 2) == 1.88  # paper's Figure 1: 120 GB, 1.9 GB
    assert zero_model_states(psi, 0, n, "fp32")["total"] == 16 * psi


def test_activations_reduce_to_korthikanti_formula():
    s, b, h, a = 512, 3, 256, 8
    gpt = family_config("llama", vocab_size=1000, dim=h, n_layers=2, n_heads=a, ffn_dim=4 * h, norm="layernorm",
                        mlp="gelu")
    got = layer_activation_bytes(gpt, 0, s, b, flash=False, dropout=True)
    assert got == s * b * h * (34 + 5 * a * s / h)
    flash = layer_activation_bytes(gpt, 0, s, b, flash=True, dropout=True)
    assert flash == s * b * h * 34 + 4 * a * s * b  # scores dropped, fp32 logsumexp kept
    acts = calc_report(get_preset("smollm2-135m"), seq_len=2048)["memory"]["activations"]
    assert acts["flash"]["checkpointing"] < acts["flash"]["no_checkpointing"] < acts["eager"]["no_checkpointing"]




def test_cli_json_and_unknown_preset():
    result = run_cli("calc", "--preset", "deepseek-v3", "--json", "--dp", "8", "--zero-stage", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["params"]["total"] == get_preset("deepseek-v3").num_params()
    bad = run_cli("calc", "--preset", "gpt-17")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "gpt-17" in bad.stderr
    table = run_cli("calc", "--preset", "tiny-moe", "--seq-len", "128")
    assert table.returncode == 0 and "routed_experts" in table.stdout and "MLA" in table.stdout
    bad_dtype = run_cli("calc", "--preset", "tiny-llama", "--dtype", "fp8")
    assert bad_dtype.returncode == 2 and "dtype" in bad_dtype.stderr and "Traceback" not in bad_dtype.stderr
    assert "--zero-stage" in run_cli("calc", "--help").stdout
