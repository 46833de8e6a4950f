"""Named model presets and the family switch (llama / qwen2 / qwen3, sparse: deepseek_v3 / qwen3_moe).

A family sets the switches that distinguish those architectures (Qwen2: q/k/v biases; Qwen3: per-head QK RMSNorm);
presets are concrete sizes, from tiny test models to the real SmolLM2-135M and common open models. Both are written
in ModelConfig's flat keys (`ModelConfig.from_flat` routes each to its section), so a preset stays one line of
switches; overrides may be flat keys too: get_preset("tiny-llama", sliding_window=8).
"""

from lmforge.common.errors import ConfigError
from lmforge.model.config import FAMILIES, ModelConfig
from lmforge.model.config_attention import local_global_pattern

FAMILY_DEFAULTS: dict[str, dict] = {
    "llama": dict(family="llama", qkv_bias=False, qk_norm=False, norm="rmsnorm", mlp="swiglu"),
    "qwen2": dict(family="qwen2", qkv_bias=True, qk_norm=False, norm="rmsnorm", mlp="swiglu", rope_theta=1e6),
    "qwen3": dict(family="qwen3", qkv_bias=False, qk_norm=True, norm="rmsnorm", mlp="swiglu", rope_theta=1e6),
    "mistral": dict(family="mistral", qkv_bias=False, qk_norm=False, norm="rmsnorm", mlp="swiglu", sliding_window=4096),
    "gemma3": dict(family="gemma3", qk_norm=True, norm="gemma_rmsnorm", mlp="geglu", norm_position="sandwich",
                   embed_scale=True, rope_theta=1e6, rope_local_theta=1e4, sliding_window=512, norm_eps=1e-6),
    "bert": dict(family="bert", norm="layernorm", norm_eps=1e-12, mlp="gelu_erf", mlp_bias=True, qkv_bias=True,
                 o_bias=True, pos_embedding="learned", type_vocab_size=2, embed_norm=True, norm_position="post",
                 causal=False, mlm_head=True),
    # Sparse families (hf_deepseek.py): MLA + DeepSeekMoE with a sigmoid router; Qwen3 attention + softmax MoE.
    "deepseek_v3": dict(family="deepseek_v3", attention="mla", router="sigmoid", router_score_bias=True,
                        norm_topk_prob=True, qkv_bias=False, qk_norm=False, norm="rmsnorm", mlp="swiglu"),
    "qwen3_moe": dict(family="qwen3_moe", qkv_bias=False, qk_norm=True, norm="rmsnorm", mlp="swiglu", rope_theta=1e6,
                      router="softmax", norm_topk_prob=True),
}

_TINY = dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=256)

PRESETS: dict[str, dict] = {
    # Tiny random models for unit tests: seconds on a laptop CPU.
    "tiny-llama": dict(**FAMILY_DEFAULTS["llama"], **_TINY),
    "tiny-qwen2": dict(**FAMILY_DEFAULTS["qwen2"], **_TINY),
    "tiny-qwen3": dict(**FAMILY_DEFAULTS["qwen3"], **_TINY, head_dim=32),
    "tiny-mistral": dict(**{**FAMILY_DEFAULTS["mistral"], "sliding_window": 16}, **_TINY),
    "tiny-gemma3": dict(**{**FAMILY_DEFAULTS["gemma3"], "sliding_window": 16}, **{**_TINY, "n_layers": 6},
                        head_dim=32, query_pre_attn_scalar=32, layer_types=("sliding",) * 5 + ("full",)),
    "tiny-bert": dict(**FAMILY_DEFAULTS["bert"], **{**_TINY, "n_kv_heads": 4}),
    # Tiny sparse models: a Qwen3-MoE-style 8-expert top-2 model, and DeepSeek-V3 in miniature (MLA, shared
    # expert, sigmoid router with group-limited routing and correction bias, a dense first layer, one MTP module).
    "tiny-moe": dict(**FAMILY_DEFAULTS["qwen3_moe"], **_TINY, head_dim=32, n_routed_experts=8, n_experts_per_tok=2,
                     moe_ffn_dim=64),
    "tiny-deepseek-v3": dict(
        **FAMILY_DEFAULTS["deepseek_v3"], **{**_TINY, "n_layers": 3, "n_kv_heads": None},
        q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, n_experts_per_tok=2, moe_ffn_dim=32, n_shared_experts=1, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, first_k_dense_replace=1, n_mtp_modules=1,
    ),
    # SmolLM2-135M(-Instruct): the embedded real model (llama architecture, GQA 9/3, tied embeddings).
    # The default model of `lmforge pretrain` (vocab_size is replaced by the trained tokenizer's).
    "pretrain-1m": dict(**FAMILY_DEFAULTS["llama"], vocab_size=2048, dim=128, n_layers=4, n_heads=4, n_kv_heads=2,
                        ffn_dim=384, max_seq_len=1024),
    "smollm2-135m": dict(
        **FAMILY_DEFAULTS["llama"], vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
        ffn_dim=1536, max_seq_len=8192, rope_theta=100000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    ),
    "smollm2-360m": dict(
        **FAMILY_DEFAULTS["llama"], vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5,
        ffn_dim=2560, max_seq_len=8192, rope_theta=100000.0,
    ),
    "llama-3.2-1b": dict(
        **FAMILY_DEFAULTS["llama"], vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8,
        ffn_dim=8192, max_seq_len=131072, rope_theta=500000.0,
    ),
    "llama-3-8b": dict(
        **FAMILY_DEFAULTS["llama"], vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        ffn_dim=14336, max_seq_len=8192, rope_theta=500000.0, tie_embeddings=False,
    ),
    "qwen2.5-0.5b": dict(
        **FAMILY_DEFAULTS["qwen2"], vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2,
        ffn_dim=4864, max_seq_len=32768, norm_eps=1e-6,
    ),
    "qwen3-0.6b": dict(
        **FAMILY_DEFAULTS["qwen3"], vocab_size=151936, dim=1024, n_layers=28, n_heads=16, n_kv_heads=8,
        head_dim=128, ffn_dim=3072, max_seq_len=40960, norm_eps=1e-6,
    ),
    # Full-size sparse configs (never instantiated here; for parameter counts and planning). DeepSeek-V3's real
    # context needs YaRN (factor 40 over 4096); this config keeps plain RoPE until rope scaling lands.
    "deepseek-v3": dict(
        **FAMILY_DEFAULTS["deepseek_v3"], vocab_size=129280, dim=7168, n_layers=61, n_heads=128,
        ffn_dim=18432, max_seq_len=163840, norm_eps=1e-6, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
        qk_rope_head_dim=64, v_head_dim=128, rope_interleave=True, n_routed_experts=256, n_experts_per_tok=8,
        moe_ffn_dim=2048, n_shared_experts=1, n_group=8, topk_group=4, routed_scaling_factor=2.5,
        first_k_dense_replace=3, n_mtp_modules=1, tie_embeddings=False, bos_token_id=0, eos_token_id=1,
    ),
    "qwen3-30b-a3b": dict(
        **FAMILY_DEFAULTS["qwen3_moe"], vocab_size=151936, dim=2048, n_layers=48, n_heads=32, n_kv_heads=4,
        head_dim=128, ffn_dim=6144, max_seq_len=40960, norm_eps=1e-6, n_routed_experts=128, n_experts_per_tok=8,
        moe_ffn_dim=768, tie_embeddings=False,
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a named preset, with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return ModelConfig.from_flat(**{**PRESETS[name], **overrides})


def family_config(family: str, **fields) -> ModelConfig:
    """A ModelConfig with the family's switches set, then `fields` on top (e.g. sizes)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")
    if family == "gemma3" and "layer_types" not in fields:  # Gemma 3: 5 local layers per global one
        fields = {**fields, "layer_types": local_global_pattern(fields.get("n_layers", ModelConfig.n_layers))}
    return ModelConfig.from_flat(**{**FAMILY_DEFAULTS[family], **fields})
