"""Hugging Face adapter for the sparse families: DeepseekV3ForCausalLM (MLA + DeepSeekMoE) and Qwen3MoeForCausalLM.

Config keys map to ModelConfig's MLA/MoE fields; per-expert tensors (`mlp.experts.{j}.gate_proj.weight`, the
on-disk layout transformers writes) are stacked into lmforge's [E, F, D] expert weights and split back on save.
`hf.py` calls in here for these model types and appends NAME_MAP to its renaming table.
"""

import re

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_names import hf_shape_fields
from lmforge.model.config import ModelConfig

SPARSE_ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
_PROJS = ("gate_proj", "up_proj", "down_proj")

# (HF pattern, lmforge pattern) pairs beyond the dense table; {i} is the layer index.
NAME_MAP = [
    ("model.layers.{i}.self_attn.q_a_layernorm.weight", "layers.{i}.attn.q_a_norm.weight"),
    ("model.layers.{i}.self_attn.q_b_proj.weight", "layers.{i}.attn.q_b_proj.weight"),
    ("model.layers.{i}.self_attn.kv_a_layernorm.weight", "layers.{i}.attn.kv_a_norm.weight"),
    ("model.layers.{i}.self_attn.kv_b_proj.weight", "layers.{i}.attn.kv_b_proj.weight"),
    ("model.layers.{i}.mlp.gate.weight", "layers.{i}.mlp.router.weight"),
    ("model.layers.{i}.mlp.gate.e_score_correction_bias", "layers.{i}.mlp.router.score_bias"),
]
_P = "model.layers.{i}."
for _kind in ("weight", "bias"):
    NAME_MAP.append((f"{_P}self_attn.q_a_proj.{_kind}", f"layers.{{i}}.attn.q_a_proj.{_kind}"))
    NAME_MAP.append((f"{_P}self_attn.kv_a_proj_with_mqa.{_kind}", f"layers.{{i}}.attn.kv_a_proj.{_kind}"))
for _proj in _PROJS:
    NAME_MAP.append((f"{_P}mlp.shared_experts.{_proj}.weight", f"layers.{{i}}.mlp.shared.{_proj}.weight"))
    NAME_MAP.append((f"model.layers.{{i}}.mlp.experts.{_proj}", f"layers.{{i}}.mlp.experts.{_proj}"))  # stacked

_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_FUSED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def _rope_parameters(hf: dict) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise LmforgeError(f"unsupported RoPE scaling {rope_type!r} for {hf['model_type']}; supported now: default")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _single_id(value) -> int | None:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def _common(hf: dict) -> dict:
    return dict(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048), norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_rope_parameters(hf), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=bool(hf.get("attention_bias", False)), o_bias=bool(hf.get("attention_bias", False)),
        n_experts_per_tok=hf["num_experts_per_tok"], moe_ffn_dim=hf["moe_intermediate_size"],
        norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        bos_token_id=_single_id(hf.get("bos_token_id")), eos_token_id=_single_id(hf.get("eos_token_id")),
        pad_token_id=_single_id(hf.get("pad_token_id")),
    )


def sparse_config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig of a deepseek_v3 or qwen3_moe config.json."""
    if hf.get("hidden_act", "silu") != "silu":
        raise LmforgeError(f"unsupported hidden_act {hf.get('hidden_act')!r}; supported: silu (SwiGLU)")
    if hf["model_type"] == "deepseek_v3":
        return ModelConfig.from_flat(
            family="deepseek_v3", attention="mla", head_dim=hf["qk_rope_head_dim"], **_common(hf),
            q_lora_rank=hf.get("q_lora_rank"), kv_lora_rank=hf["kv_lora_rank"],
            qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
            v_head_dim=hf["v_head_dim"], rope_interleave=bool(hf.get("rope_interleave", True)),
            n_routed_experts=hf["n_routed_experts"], n_shared_experts=hf.get("n_shared_experts") or 0,
            router="sigmoid", router_score_bias=True, routed_scaling_factor=float(hf.get("routed_scaling_factor", 1)),
            n_group=hf.get("n_group") or 1, topk_group=hf.get("topk_group") or 1,
            first_k_dense_replace=hf.get("first_k_dense_replace") or 0,
            n_mtp_modules=hf.get("num_nextn_predict_layers", 0),
        )
    if hf.get("use_sliding_window"):
        raise LmforgeError("sliding-window attention checkpoints are not supported yet")
    n_heads = hf["num_attention_heads"]
    return ModelConfig.from_flat(
        family="qwen3_moe", qk_norm=True, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads, **_common(hf),
        n_routed_experts=hf.get("num_experts") or hf["num_local_experts"], router="softmax",
        moe_layer_step=hf.get("decoder_sparse_step", 1),
        mlp_only_layers=tuple(hf.get("mlp_only_layers") or ()),
        aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.0)) if hf.get("output_router_logits") else 0.0,
    )


def sparse_config_to_hf(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """config.json for DeepseekV3ForCausalLM / Qwen3MoeForCausalLM; layouts transformers cannot express are refused."""
    att, moe = cfg.attention, cfg.moe
    if (cfg.norms.kind != "rmsnorm" or cfg.ffn.kind != "swiglu" or att.qkv_bias != att.o_bias
            or moe.n_routed_experts == 0):
        raise LmforgeError(f"{cfg.family} export needs rmsnorm, swiglu, one attention bias flag and routed experts")
    hf = {
        "architectures": [SPARSE_ARCHITECTURES[cfg.family]], "model_type": cfg.family, **hf_shape_fields(cfg),
        "hidden_act": "silu", "rms_norm_eps": cfg.norms.eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.positions.rope_theta},
        "rope_theta": cfg.positions.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": cfg.attention.o_bias,
        "num_experts_per_tok": cfg.moe.n_experts_per_tok, "moe_intermediate_size": cfg.moe.ffn_dim or cfg.ffn_dim,
        "norm_topk_prob": cfg.moe.norm_topk_prob, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id, "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
    }
    if cfg.family == "deepseek_v3":
        if (cfg.attention.kind != "mla" or cfg.moe.router != "sigmoid" or not cfg.moe.router_score_bias
                or cfg.moe.layer_step != 1 or cfg.moe.mlp_only_layers):
            raise LmforgeError("deepseek_v3 export needs attention=mla, router=sigmoid, router_score_bias=True and "
                               "MoE on every layer from first_k_dense_replace on")
        hf.update(num_key_value_heads=cfg.n_heads, q_lora_rank=att.q_lora_rank, kv_lora_rank=att.kv_lora_rank,
                  qk_nope_head_dim=att.qk_nope_head_dim, qk_rope_head_dim=att.qk_rope_head_dim,
                  v_head_dim=att.v_head_dim, head_dim=att.qk_rope_head_dim, rope_interleave=att.rope_interleave,
                  n_routed_experts=moe.n_routed_experts, n_shared_experts=moe.n_shared_experts,
                  routed_scaling_factor=moe.routed_scaling_factor, n_group=moe.n_group, topk_group=moe.topk_group,
                  first_k_dense_replace=moe.first_k_dense_replace, num_nextn_predict_layers=cfg.heads.n_mtp_modules)
        return hf
    if (att.kind != "gqa" or not att.qk_norm or moe.router != "softmax" or moe.n_shared_experts
            or moe.router_score_bias or moe.n_group != 1 or moe.routed_scaling_factor != 1):
        raise LmforgeError("qwen3_moe export needs gqa attention with qk_norm and a plain softmax top-k router "
                           "(no shared experts, score bias, groups or routed scaling)")
    dense = sorted(set(cfg.moe.mlp_only_layers) | set(range(min(cfg.moe.first_k_dense_replace, cfg.n_layers))))
    hf.update(num_key_value_heads=cfg.resolved_kv_heads, head_dim=cfg.resolved_head_dim,
              num_experts=cfg.moe.n_routed_experts, decoder_sparse_step=cfg.moe.layer_step, mlp_only_layers=dense,
              use_sliding_window=False, sliding_window=None, router_aux_loss_coef=cfg.moe.aux_loss_coef or 0.001,
              output_router_logits=cfg.moe.aux_loss_coef > 0)
    return hf


def stack_experts(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Per-expert (or fused gate_up) HF tensors -> one stacked tensor per layer and projection.

    DeepSeek-V3 checkpoints also hold the MTP module as layer n_layers; like transformers we leave it out here.
    """
    out, experts = {}, {}
    for name, tensor in hf_state.items():
        layer = _LAYER.match(name)
        if cfg.family == "deepseek_v3" and layer and int(layer.group(1)) >= cfg.n_layers:
            continue
        match, fused = _EXPERT.match(name), _FUSED.match(name)
        if match:
            experts.setdefault((int(match.group(1)), match.group(3)), {})[int(match.group(2))] = tensor
        elif fused:
            gate, up = tensor.chunk(2, dim=1)
            out[f"model.layers.{fused.group(1)}.mlp.experts.gate_proj"] = gate
            out[f"model.layers.{fused.group(1)}.mlp.experts.up_proj"] = up
        else:
            out[name] = tensor
    for (layer, proj), by_index in experts.items():
        if sorted(by_index) != list(range(cfg.moe.n_routed_experts)):
            raise LmforgeError(f"layer {layer} {proj}: expected experts 0..{cfg.moe.n_routed_experts - 1}, "
                               f"found {len(by_index)}")
        out[f"model.layers.{layer}.mlp.experts.{proj}"] = torch.stack([by_index[j] for j in sorted(by_index)])
    return out


def unstack_experts(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of stack_experts: one `mlp.experts.{j}.{proj}.weight` tensor per expert, as transformers saves."""
    out = {}
    for name, tensor in hf_state.items():
        if re.search(r"\.mlp\.experts\.(gate_proj|up_proj|down_proj)$", name):
            prefix, proj = name.rsplit(".", 1)
            for j, weight in enumerate(tensor.unbind(0)):
                out[f"{prefix}.{j}.{proj}.weight"] = weight.contiguous()
        else:
            out[name] = tensor
    return out
