"""Parameters and model-state bytes per rank of a parallel layout (tp x pp x dp), as `lmforge pretrain --tp --pp`
lays a model out (lmforge/train/parallel/): tensor parallelism splits the attention projections (by heads), the MLP
matrices and the MoE experts over tp ranks while norms, routers, the embedding and the LM head stay replicated;
pipeline stages take contiguous layers (the embedding on the first, final norm + head on the last); ZeRO then
shards what one (tp, pp) rank holds over the dp ranks (calc_memory.zero_model_states).
"""

from lmforge.calc.calc_memory import zero_model_states
from lmforge.common.errors import ConfigError
from lmforge.model.config_ffn import is_moe_layer
from lmforge.model.param_count import (
    attention_params,
    dense_mlp_params,
    expert_params,
    norm_params,
    param_breakdown,
    router_params,
)


def _attention_split(cfg) -> tuple[int, int]:
    """(split over tp, replicated) parameters of one attention block (MHA / GQA / MQA; MLA: all replicated, as
    lmforge trains it with tp=1 only)."""
    if cfg.attention.kind == "mla":
        return 0, attention_params(cfg)
    d, hd, h, kv = cfg.dim, cfg.resolved_head_dim, cfg.n_heads, cfg.resolved_kv_heads
    split = 2 * d * h * hd + 2 * d * kv * hd + (h + 2 * kv) * hd * cfg.attention.qkv_bias
    return split, d * cfg.attention.o_bias + 2 * hd * cfg.attention.qk_norm


def layer_split(cfg, i: int) -> tuple[int, int]:
    """(split over tp, replicated) parameters of block i: attention, its MLP or MoE, its norms."""
    split, replicated = _attention_split(cfg)
    if is_moe_layer(cfg, i):
        split += (cfg.moe.n_routed_experts + cfg.moe.n_shared_experts) * expert_params(cfg)
        replicated += router_params(cfg)
    else:
        bias = cfg.ffn.bias * cfg.dim  # the row-parallel down projection's bias is replicated
        split += dense_mlp_params(cfg) - bias
        replicated += bias
    replicated += (2 + 2 * (cfg.norms.position == "sandwich")) * norm_params(cfg)
    return split, replicated


def stage_bounds(n_layers: int, stage: int, n_stages: int) -> range:
    base, extra = divmod(n_layers, n_stages)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (stage < extra))


def layout_params(cfg, tp: int = 1, pp: int = 1) -> list[float]:
    """Parameters one rank of each pipeline stage holds under tensor parallelism tp (before ZeRO sharding)."""
    if tp < 1 or pp < 1 or cfg.n_layers < pp:
        raise ConfigError(f"tp={tp}, pp={pp}: must be >= 1, pp at most n_layers={cfg.n_layers}")
    if tp > 1 and cfg.attention.kind == "mla":
        raise ConfigError(f"tp={tp}: tensor parallelism splits MHA / GQA attention; MLA models train with tp=1")
    parts, norm = param_breakdown(cfg), norm_params(cfg)
    out = []
    for stage in range(pp):
        split = replicated = 0
        for i in stage_bounds(cfg.n_layers, stage, pp):
            s, r = layer_split(cfg, i)
            split, replicated = split + s, replicated + r
        if stage == 0:  # the token (and position) tables, the embedding norm
            replicated += parts["embedding"] + cfg.embeddings.norm * norm
        if stage == pp - 1:  # the final norm, the untied head (and an MLM head's transform norm)
            replicated += parts["lm_head"] + ((cfg.norms.position != "post") + cfg.heads.mlm) * norm
        out.append(split / tp + replicated)
    return out


def layout_memory(cfg, tp: int, pp: int, dp: int, zero_stage: int, dtype: str) -> dict:
    """The largest stage's parameters per rank and its model-state bytes under ZeRO over dp ranks."""
    per_stage = layout_params(cfg, tp, pp)
    params = max(per_stage)
    return {"tp": tp, "pp": pp, "dp": dp, "world": tp * pp * dp, "params_per_rank": params,
            "params_per_stage": per_stage, "model_states": zero_model_states(params, zero_stage, dp, dtype)}
