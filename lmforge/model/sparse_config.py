"""Validation and the MoE layer pattern of the DeepSeek-style switches of ModelConfig: MLA, MoE and MTP.

Kept beside config.py so the dense config stays short: `check_sparse_fields` runs in ModelConfig.__post_init__,
`is_moe_layer` says which layers route; the parameter arithmetic lives in param_count.py.
"""

from lmforge.common.errors import ConfigError

ATTENTIONS = ("gqa", "mla")  # gqa covers multi-head and multi-query attention too
MLA_MODES = ("auto", "naive", "absorbed")
ROUTERS = ("softmax", "sigmoid")


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")


def check_sparse_fields(cfg) -> None:
    """Raise ConfigError naming the first MLA / MoE / MTP field that is out of range."""
    if cfg.attention not in ATTENTIONS:
        raise ConfigError(f"ModelConfig.attention must be one of {', '.join(ATTENTIONS)}, got {cfg.attention!r}")
    if cfg.mla_mode not in MLA_MODES:
        raise ConfigError(f"ModelConfig.mla_mode must be one of {', '.join(MLA_MODES)}, got {cfg.mla_mode!r}")
    if cfg.attention == "mla":
        _positive(cfg, "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if cfg.q_lora_rank is not None:
            _positive(cfg, "q_lora_rank")
        if cfg.qk_rope_head_dim % 2:
            raise ConfigError(f"ModelConfig.qk_rope_head_dim={cfg.qk_rope_head_dim} must be even for RoPE")
    if cfg.router not in ROUTERS:
        raise ConfigError(f"ModelConfig.router must be one of {', '.join(ROUTERS)}, got {cfg.router!r}")
    if not isinstance(cfg.n_routed_experts, int) or cfg.n_routed_experts < 0:
        raise ConfigError(f"ModelConfig.n_routed_experts must be >= 0 (0 = dense MLPs), got {cfg.n_routed_experts!r}")
    for name in ("n_shared_experts", "first_k_dense_replace", "n_mtp_modules"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 0:
            raise ConfigError(f"ModelConfig.{name} must be an integer >= 0, got {getattr(cfg, name)!r}")
    if cfg.aux_loss_coef < 0 or cfg.mtp_loss_weight < 0 or cfg.routed_scaling_factor <= 0:
        raise ConfigError("ModelConfig.aux_loss_coef and mtp_loss_weight must be >= 0, routed_scaling_factor > 0")
    if cfg.n_routed_experts:
        _positive(cfg, "n_experts_per_tok", "n_group", "topk_group", "moe_layer_step")
        if cfg.moe_ffn_dim is not None:
            _positive(cfg, "moe_ffn_dim")
        if cfg.n_experts_per_tok > cfg.n_routed_experts:
            raise ConfigError(f"ModelConfig.n_experts_per_tok={cfg.n_experts_per_tok} exceeds "
                              f"n_routed_experts={cfg.n_routed_experts}")
        if cfg.n_routed_experts % cfg.n_group or cfg.topk_group > cfg.n_group:
            raise ConfigError(f"ModelConfig.n_group={cfg.n_group} must divide n_routed_experts="
                              f"{cfg.n_routed_experts} and be >= topk_group={cfg.topk_group}")
        per_group = cfg.n_routed_experts // cfg.n_group
        if cfg.n_group > 1 and (per_group < 2 or cfg.topk_group * per_group < cfg.n_experts_per_tok):
            raise ConfigError(f"group-limited routing needs >= 2 experts per group and topk_group * experts per "
                              f"group >= n_experts_per_tok; got n_group={cfg.n_group}, topk_group={cfg.topk_group}")
    bad = [i for i in cfg.mlp_only_layers if not isinstance(i, int) or not 0 <= i < cfg.n_layers]
    if bad:
        raise ConfigError(f"ModelConfig.mlp_only_layers holds {bad}: layer indices must lie in [0, {cfg.n_layers})")


def is_moe_layer(cfg, layer_idx: int) -> bool:
    """Whether layer `layer_idx` has a routed MoE (DeepSeek first_k_dense_replace, Qwen decoder_sparse_step)."""
    return (cfg.n_routed_experts > 0 and layer_idx >= cfg.first_k_dense_replace
            and layer_idx not in cfg.mlp_only_layers and (layer_idx + 1) % cfg.moe_layer_step == 0)

