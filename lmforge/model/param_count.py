"""Parameter counts by component from a ModelConfig's shapes alone (no module is built): the one place for them.

`param_breakdown` splits a model into embedding, lm_head, attention, dense MLP, routed / shared experts, routers
and norms; `ModelConfig.num_params` is its sum. active=True counts what one token uses (top-k routed experts).
"""

from lmforge.model.config_ffn import is_moe_layer

COMPONENTS = ("embedding", "lm_head", "attention", "dense_mlp", "routed_experts", "shared_experts", "routers", "norms")


def norm_params(cfg) -> int:
    """One block norm: RMSNorm has a scale, LayerNorm a scale and a bias."""
    return 2 * cfg.dim if cfg.norms.kind == "layernorm" else cfg.dim


def mha_attention_params(cfg) -> int:
    """q/k/v/o projections of multi-head, grouped- or multi-query attention, their biases and QK-norm scales."""
    d, hd, h, kv = cfg.dim, cfg.resolved_head_dim, cfg.n_heads, cfg.resolved_kv_heads
    return (2 * d * h * hd + 2 * d * kv * hd + (h + 2 * kv) * hd * cfg.attention.qkv_bias + d * cfg.attention.o_bias
            + 2 * hd * cfg.attention.qk_norm)


def mla_attention_params(cfg) -> int:
    """Weights of one MLA block (projections, biases, the two latent RMSNorms)."""
    d, h, a = cfg.dim, cfg.n_heads, cfg.attention
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    if a.q_lora_rank is None:
        q = d * h * qk
    else:
        q = d * a.q_lora_rank + a.q_lora_rank * a.qkv_bias + a.q_lora_rank + a.q_lora_rank * h * qk
    kv_a = d * (a.kv_lora_rank + a.qk_rope_head_dim) + (a.kv_lora_rank + a.qk_rope_head_dim) * a.qkv_bias
    kv_b = a.kv_lora_rank + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
    return q + kv_a + kv_b + h * a.v_head_dim * d + d * a.o_bias


def attention_params(cfg) -> int:
    """One attention block's weights (norms inside it, QK-norm or MLA's latent norms, included)."""
    return mla_attention_params(cfg) if cfg.attention.kind == "mla" else mha_attention_params(cfg)


def dense_mlp_params(cfg) -> int:
    """One dense MLP: gated (SwiGLU / GeGLU) has three matrices, GELU / ReLU two."""
    n_mats = 3 if cfg.ffn.kind in ("swiglu", "geglu") else 2
    return n_mats * cfg.dim * cfg.ffn_dim + cfg.ffn.bias * (cfg.ffn_dim * (n_mats - 1) + cfg.dim)


def expert_params(cfg) -> int:
    """One SwiGLU expert of moe_ffn_dim (routed and shared experts have this size)."""
    return 3 * cfg.dim * (cfg.moe.ffn_dim or cfg.ffn_dim)


def router_params(cfg) -> int:
    """The router's [E, dim] weight and DeepSeek-V3's selection bias (a stored buffer, counted as the checkpoint)."""
    return cfg.dim * cfg.moe.n_routed_experts + cfg.moe.n_routed_experts * cfg.moe.router_score_bias


def param_breakdown(cfg, active: bool = False) -> dict[str, int]:
    """Parameters per component (tied embeddings counted once, under embedding; MTP modules not counted).

    embedding: token (+ learned position, token-type) tables. lm_head: the untied output matrix and a BERT MLM
    head's dense + decoder bias. norms: the blocks' norms, sandwich post-norms, the final / embedding norm.
    """
    d = cfg.dim
    norm = norm_params(cfg)
    n_moe = sum(is_moe_layer(cfg, i) for i in range(cfg.n_layers))
    routed = cfg.moe.n_experts_per_tok if active else cfg.moe.n_routed_experts
    learned_positions = cfg.max_seq_len * d * (cfg.positions.kind == "learned")
    embedding = cfg.vocab_size * d + cfg.embeddings.type_vocab_size * d + learned_positions
    lm_head = cfg.vocab_size * d * (not cfg.tie_embeddings) + (d * d + d + cfg.vocab_size) * cfg.heads.mlm
    norms_per_layer = 2 + 2 * (cfg.norms.position == "sandwich")
    n_extra_norms = (cfg.norms.position != "post") + cfg.embeddings.norm + cfg.heads.mlm  # final, embedding, MLM head
    return {
        "embedding": embedding,
        "lm_head": lm_head,
        "attention": cfg.n_layers * attention_params(cfg),
        "dense_mlp": (cfg.n_layers - n_moe) * dense_mlp_params(cfg),
        "routed_experts": n_moe * routed * expert_params(cfg),
        "shared_experts": n_moe * cfg.moe.n_shared_experts * expert_params(cfg),
        "routers": n_moe * router_params(cfg),
        "norms": (cfg.n_layers * norms_per_layer + n_extra_norms) * norm,
    }


def count_params(cfg, active: bool = False) -> int:
    return sum(param_breakdown(cfg, active).values())
