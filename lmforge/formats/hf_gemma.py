"""Hugging Face adapter for Gemma 3 text models (`Gemma3ForCausalLM`, model_type "gemma3_text").

Gemma 3: (1 + w) RMSNorms in a sandwich around attention and MLP, GeGLU (tanh GELU), embeddings scaled by
sqrt(dim), per-head QK-norm, 5 sliding-window layers per global one, a separate RoPE base for local layers,
attention scaled by query_pre_attn_scalar^-0.5 and optional final logit softcapping.
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_names import NameTable, hf_shape_fields
from lmforge.model.config import ModelConfig
from lmforge.model.rope_scaling import rope_parameters_to_hf, rope_scaling_from_hf

_LAYER_TYPES = {"sliding_attention": "sliding", "full_attention": "full"}
_ACTS = {"gelu_pytorch_tanh": "geglu", "gelu_new": "geglu", "gelu_fast": "geglu"}

_PAIRS = [
    ("model.embed_tokens.weight", "embed.weight"),
    ("model.norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.attn_post_norm.weight"),
    ("model.layers.{i}.pre_feedforward_layernorm.weight", "layers.{i}.mlp_norm.weight"),
    ("model.layers.{i}.post_feedforward_layernorm.weight", "layers.{i}.mlp_post_norm.weight"),
    ("model.layers.{i}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.weight"),
    ("model.layers.{i}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.weight"),
]
_PAIRS += [(f"model.layers.{{i}}.self_attn.{p}.{k}", f"layers.{{i}}.attn.{p}.{k}")
           for p in ("q_proj", "k_proj", "v_proj", "o_proj") for k in ("weight", "bias")]
_PAIRS += [(f"model.layers.{{i}}.mlp.{p}.weight", f"layers.{{i}}.mlp.{p}.weight")
           for p in ("gate_proj", "up_proj", "down_proj")]
NAMES = NameTable(_PAIRS, ignored=(r"model.rotary_emb.*",))


def _single_id(value) -> int | None:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def gemma3_config_from_hf(hf: dict) -> ModelConfig:
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _ACTS:
        raise LmforgeError(f"unsupported Gemma3 activation {act!r}; supported: {', '.join(_ACTS)}")
    for key in ("attn_logit_softcapping", "use_bidirectional_attention"):
        if hf.get(key):
            raise LmforgeError(f"Gemma3 {key}={hf[key]!r} is not supported")
    n_layers, max_pos = hf["num_hidden_layers"], hf.get("max_position_embeddings", 131072)
    pattern = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)
    ]
    rope = hf.get("rope_parameters") or {}
    full = dict(rope.get("full_attention") or {})
    local = dict(rope.get("sliding_attention") or {})
    if hf.get("rope_scaling"):  # legacy configs: scaling applies to the global layers only
        full.update(hf["rope_scaling"])
    if local.get("rope_type", "default") != "default":
        raise LmforgeError("Gemma3 RoPE scaling on sliding-window layers is not supported")
    return ModelConfig.from_flat(
        family="gemma3",
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=n_layers,
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"],
        max_seq_len=max_pos,
        norm="gemma_rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp=_ACTS[act],
        rope_theta=float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0))),
        rope_local_theta=float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))),
        rope_scaling=rope_scaling_from_hf(full, max_pos),
        qkv_bias=bool(hf.get("attention_bias", False)),
        o_bias=bool(hf.get("attention_bias", False)),
        qk_norm=True,
        norm_position="sandwich",
        embed_scale=True,
        sliding_window=hf.get("sliding_window") if "sliding_attention" in layer_types else None,
        layer_types=tuple(_LAYER_TYPES[t] for t in layer_types),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        final_logit_softcap=hf.get("final_logit_softcapping"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=_single_id(hf.get("bos_token_id")),
        eos_token_id=_single_id(hf.get("eos_token_id")),
        pad_token_id=_single_id(hf.get("pad_token_id")),
    )


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value  # transformers' strict config wants an int here


def gemma3_config_to_hf(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    fixed = dict(norm="gemma_rmsnorm", mlp="geglu", mlp_bias=False, norm_position="sandwich", qk_norm=True,
                 embed_scale=True, causal=True, pos_embedding="rope", embed_norm=False, mlm_head=False)
    flat = cfg.to_flat()  # the switches by their flat names, as the message shows them
    wrong = {k: flat.get(k) for k, v in fixed.items() if flat.get(k) != v}
    att, pos = cfg.attention, cfg.positions
    if wrong or att.qkv_bias != att.o_bias or pos.logn_train_len or cfg.embeddings.type_vocab_size:
        raise LmforgeError(f"gemma3 export needs {fixed}, qkv_bias == o_bias, no LogN, no token types; got {wrong}")
    layer_types = cfg.attention.layer_types or ("sliding" if cfg.attention.sliding_window else "full",) * cfg.n_layers
    back = {v: k for k, v in _LAYER_TYPES.items()}
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        **hf_shape_fields(cfg),
        "num_key_value_heads": cfg.resolved_kv_heads,
        "head_dim": cfg.resolved_head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": cfg.norms.eps,
        "rope_parameters": {
            "full_attention": rope_parameters_to_hf(cfg.positions.rope_scaling, cfg.positions.rope_theta),
            "sliding_attention": rope_parameters_to_hf(None, pos.rope_local_theta or pos.rope_theta),
        },
        "attention_bias": cfg.attention.o_bias,
        "query_pre_attn_scalar": _int_if_whole(cfg.attention.query_pre_attn_scalar or cfg.resolved_head_dim),
        "sliding_window": cfg.attention.sliding_window or cfg.max_seq_len,
        "layer_types": [back[t] for t in layer_types],
        "final_logit_softcapping": cfg.heads.final_logit_softcap,
        "attn_logit_softcapping": None,
        "use_bidirectional_attention": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }
