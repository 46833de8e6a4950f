"""The model calculator: parameters by component, FLOPs per token (Kaplan et al., 2020; PaLM appendix B), training
memory per ZeRO stage with activations (calc_memory.py), and KV-cache bytes per token for MHA / GQA / MQA / MLA.

Pure functions of a ModelConfig: nothing is built, so a 671B-parameter config costs microseconds.
"""

from lmforge.calc.calc_memory import ZERO_STAGES, activation_memory, dtype_bytes, zero_model_states
from lmforge.common.errors import ConfigError
from lmforge.model.config_attention import layer_window
from lmforge.model.param_count import param_breakdown


def params_summary(cfg) -> dict:
    """Parameters by component, total and active (per token: top-k routed experts), and the matmul count."""
    total, active = param_breakdown(cfg), param_breakdown(cfg, active=True)
    return {"components": total, "active_components": active, "total": sum(total.values()),
            "active": sum(active.values()), "non_embedding_active": sum(active.values()) - active["embedding"]}


def head_dims(cfg) -> tuple[int, int]:
    """(query/key width, value width) of one attention head: MLA's nope + rope and v_head_dim, else head_dim."""
    if cfg.attention.kind == "mla":
        return cfg.attention.qk_nope_head_dim + cfg.attention.qk_rope_head_dim, cfg.attention.v_head_dim
    return cfg.resolved_head_dim, cfg.resolved_head_dim


def flops_per_token(cfg, seq_len: int) -> dict[str, int]:
    """Forward, training and inference FLOPs per token (a multiply-add is 2 FLOPs) at context `seq_len`.

    Matmuls (Kaplan et al. 2020, section 2.1): a forward pass costs 2 N per token, N = active non-embedding
    parameters (every weight a token meets, top-k routed experts only) plus the lm_head matrix vocab x dim, which
    is a matmul even when tied to the embedding table (a lookup, no FLOPs).
    Attention (PaLM, Chowdhery et al. 2022, appendix B: 6N + 12 L H Q T for training): per layer and token, Q K^T
    costs 2 H T d_qk and P V costs 2 H T d_v, with H query heads (GQA/MQA share K/V but not this compute),
    T = seq_len, or the window on sliding-window layers; like PaLM, the causal mask's halving is not counted.
    Training = 3 x forward (backward is twice the forward): 6 N + 6 sum_l H T_l (d_qk + d_v), i.e. 6N + 12 L H Q T
    when d_qk = d_v = Q. Inference (one token against a context of seq_len) = forward = 2 N + 2 sum_l H T_l (...).
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    active = param_breakdown(cfg, active=True)
    matmul = sum(active.values()) - active["embedding"] + cfg.vocab_size * cfg.dim * cfg.tie_embeddings
    d_qk, d_v = head_dims(cfg)
    contexts = [min(seq_len, layer_window(cfg, i) or seq_len) for i in range(cfg.n_layers)]
    attention = 2 * cfg.n_heads * (d_qk + d_v) * sum(contexts)
    forward = 2 * matmul + attention
    return {"matmul_params": matmul, "forward": forward, "attention_forward": attention,
            "training": 3 * forward, "inference": forward}


def kv_bytes_per_token(cfg, dtype: str = "bf16") -> int:
    """KV-cache bytes one token adds over all layers: 2 n_kv_heads head_dim (K and V), or MLA's latent c_kv plus
    the shared RoPE key, (kv_lora_rank + qk_rope_head_dim), per layer."""
    if cfg.attention.kind == "mla":
        per_layer = cfg.attention.kv_lora_rank + cfg.attention.qk_rope_head_dim
    else:
        per_layer = 2 * cfg.resolved_kv_heads * cfg.resolved_head_dim
    return per_layer * cfg.n_layers * dtype_bytes(dtype)


def comparison_groups(cfg) -> int:
    """The GQA group count to compare against: the config's own kv heads when it is GQA, else 8 (Llama 3)."""
    kv = cfg.resolved_kv_heads
    if cfg.attention.kind == "gqa" and 1 < kv < cfg.n_heads:
        return kv
    return next(g for g in (8, 4, 2, 1) if g < cfg.n_heads and cfg.n_heads % g == 0) if cfg.n_heads > 1 else 1


def kv_comparison(cfg, dtype: str = "bf16") -> dict[str, dict]:
    """KV bytes per token if this model's attention were MHA, GQA, MQA or MLA, at its head sizes.

    MHA: n_heads (d_qk + d_v) per layer; GQA: g (d_qk + d_v) with g from `comparison_groups`; MQA: d_qk + d_v;
    MLA: kv_lora_rank + qk_rope_head_dim of an MLA config, else DeepSeek-V2's sizing d_c = 4 d_h, d_R = d_h / 2.
    """
    d_qk, d_v = head_dims(cfg)
    g = comparison_groups(cfg)
    if cfg.attention.kind == "mla":
        mla, mla_note = cfg.attention.kv_lora_rank + cfg.attention.qk_rope_head_dim, "kv_lora_rank + rope dim"
    else:
        mla, mla_note = 4 * d_qk + d_qk // 2, "d_c = 4 d_h, d_R = d_h/2 (DeepSeek-V2)"
    rows = {"MHA": (cfg.n_heads * (d_qk + d_v), f"{cfg.n_heads} kv heads"),
            "GQA": (g * (d_qk + d_v), f"{g} kv heads"), "MQA": (d_qk + d_v, "1 kv head"), "MLA": (mla, mla_note)}
    nbytes = dtype_bytes(dtype) * cfg.n_layers
    return {name: {"bytes_per_token": per_layer * nbytes, "elements_per_layer": per_layer, "note": note}
            for name, (per_layer, note) in rows.items()}


def calc_report(cfg, seq_len: int = 4096, batch: int = 1, dtype: str = "bf16", zero_stage: int = 0,
                dp: int = 1) -> dict:
    """Everything the `lmforge calc` command prints, as one JSON-able dict (bytes, FLOPs, counts)."""
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    if zero_stage not in ZERO_STAGES:
        raise ConfigError(f"zero stage must be one of 0, 1, 2, 3, got {zero_stage!r}")
    params = params_summary(cfg)
    zero = {str(s): zero_model_states(params["total"], s, dp, dtype) for s in ZERO_STAGES}
    acts = {"flash": activation_memory(cfg, seq_len, batch, flash=True),
            "eager": activation_memory(cfg, seq_len, batch, flash=False)}
    per_rank = zero[str(zero_stage)]["total"]
    attention = "MLA" if cfg.attention.kind == "mla" else "MHA" if cfg.resolved_kv_heads == cfg.n_heads else \
        "MQA" if cfg.resolved_kv_heads == 1 else "GQA"
    return {
        "config": {"family": cfg.family, "attention": attention, "n_layers": cfg.n_layers, "dim": cfg.dim,
                   "n_heads": cfg.n_heads, "n_kv_heads": cfg.resolved_kv_heads, "vocab_size": cfg.vocab_size,
                   "n_routed_experts": cfg.moe.n_routed_experts, "n_experts_per_tok": cfg.moe.n_experts_per_tok},
        "settings": {"seq_len": seq_len, "batch": batch, "dtype": dtype, "zero_stage": zero_stage, "dp": dp},
        "params": params,
        "flops_per_token": flops_per_token(cfg, seq_len),
        "memory": {"zero": zero, "activations": acts,
                   "per_rank_total": {"checkpointing": per_rank + acts["flash"]["checkpointing"],
                                      "no_checkpointing": per_rank + acts["flash"]["no_checkpointing"]}},
        "kv_cache": {"bytes_per_token": kv_bytes_per_token(cfg, dtype), "comparison": kv_comparison(cfg, dtype)},
    }
