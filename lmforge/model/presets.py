"""Named model presets and the llama / qwen2 / qwen3 family switch.

A family sets the switches that distinguish those architectures (Qwen2: q/k/v biases; Qwen3: per-head QK RMSNorm);
presets are concrete sizes, from tiny test models to the real SmolLM2-135M and common open models.
"""

from lmforge.common.errors import ConfigError
from lmforge.model.config import FAMILIES, ModelConfig

FAMILY_DEFAULTS: dict[str, dict] = {
    "llama": dict(family="llama", qkv_bias=False, qk_norm=False, norm="rmsnorm", mlp="swiglu"),
    "qwen2": dict(family="qwen2", qkv_bias=True, qk_norm=False, norm="rmsnorm", mlp="swiglu", rope_theta=1e6),
    "qwen3": dict(family="qwen3", qkv_bias=False, qk_norm=True, norm="rmsnorm", mlp="swiglu", rope_theta=1e6),
}

_TINY = dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=256)

PRESETS: dict[str, dict] = {
    # Tiny random models for unit tests: seconds on a laptop CPU.
    "tiny-llama": dict(**FAMILY_DEFAULTS["llama"], **_TINY),
    "tiny-qwen2": dict(**FAMILY_DEFAULTS["qwen2"], **_TINY),
    "tiny-qwen3": dict(**FAMILY_DEFAULTS["qwen3"], **_TINY, head_dim=32),
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
    "qwen2.5-0.5b": dict(
        **FAMILY_DEFAULTS["qwen2"], vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2,
        ffn_dim=4864, max_seq_len=32768, norm_eps=1e-6,
    ),
    "qwen3-0.6b": dict(
        **FAMILY_DEFAULTS["qwen3"], vocab_size=151936, dim=1024, n_layers=28, n_heads=16, n_kv_heads=8,
        head_dim=128, ffn_dim=3072, max_seq_len=40960, norm_eps=1e-6,
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a named preset, with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return ModelConfig(**PRESETS[name]).replace(**overrides) if overrides else ModelConfig(**PRESETS[name])


def family_config(family: str, **fields) -> ModelConfig:
    """A ModelConfig with the family's switches set, then `fields` on top (e.g. sizes)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")
    return ModelConfig(**{**FAMILY_DEFAULTS[family], **fields})
