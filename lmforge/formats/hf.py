"""Hugging Face adapter: config.json <-> ModelConfig and HF tensor names <-> lmforge names.

Kept outside the model classes (as torchtitan does) so the model stays plain. Covers transformers'
LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM; Gemma3ForCausalLM, BertForMaskedLM and
BloomForCausalLM go through their own adapters (hf_gemma.py, hf_bert.py, hf_bloom.py) via `_OTHER_FAMILIES`;
DeepseekV3ForCausalLM and Qwen3MoeForCausalLM through hf_deepseek.py. T5 (an encoder-decoder) is hf_t5.py's.
"""


import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_bert import NAMES as BERT_NAMES
from lmforge.formats.hf_bert import bert_config_from_hf, bert_config_to_hf
from lmforge.formats.hf_bloom import SIZE_KEYS as BLOOM_SIZE_KEYS
from lmforge.formats.hf_bloom import bloom_config_from_hf, bloom_config_to_hf, bloom_names
from lmforge.formats.hf_deepseek import NAME_MAP as _SPARSE_NAME_MAP
from lmforge.formats.hf_deepseek import (
    SPARSE_ARCHITECTURES,
    sparse_config_from_hf,
    sparse_config_to_hf,
    stack_experts,
    unstack_experts,
)
from lmforge.formats.hf_gemma import NAMES as GEMMA3_NAMES
from lmforge.formats.hf_gemma import gemma3_config_from_hf, gemma3_config_to_hf
from lmforge.formats.hf_names import compile_pattern, hf_shape_fields, rename
from lmforge.model.config import ModelConfig
from lmforge.model.rope_scaling import rope_parameters_to_hf, rope_scaling_from_hf

HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                    "mistral": "MistralForCausalLM"}
_MODEL_TYPE_TO_FAMILY = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3"}
# family -> (model_type, config reader, config writer, name table) for architectures with their own adapter
_OTHER_FAMILIES = {
    "gemma3": ("gemma3_text", gemma3_config_from_hf, gemma3_config_to_hf, GEMMA3_NAMES),
    "bert": ("bert", bert_config_from_hf, bert_config_to_hf, BERT_NAMES),
    "bloom": ("bloom", bloom_config_from_hf, bloom_config_to_hf, bloom_names),  # a table per config (its heads)
}
_OTHER_MODEL_TYPES = {model_type: family for family, (model_type, *_) in _OTHER_FAMILIES.items()}

# (HF pattern, lmforge pattern); {i} is the layer index.
_NAME_MAP = [
    ("model.embed_tokens.weight", "embed.weight"),
    ("model.norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.weight"),
    ("model.layers.{i}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.weight"),
    ("model.layers.{i}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.weight"),
]
for _proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
    for _kind in ("weight", "bias"):
        _NAME_MAP.append((f"model.layers.{{i}}.self_attn.{_proj}.{_kind}", f"layers.{{i}}.attn.{_proj}.{_kind}"))
for _proj in ("gate_proj", "up_proj", "down_proj"):
    for _kind in ("weight", "bias"):
        _NAME_MAP.append((f"model.layers.{{i}}.mlp.{_proj}.{_kind}", f"layers.{{i}}.mlp.{_proj}.{_kind}"))
_NAME_MAP += _SPARSE_NAME_MAP  # MLA, router, shared and stacked experts (hf_deepseek.py)


_HF_TO_OURS = [(compile_pattern(hf), ours) for hf, ours in _NAME_MAP]
_OURS_TO_HF = [(compile_pattern(ours), hf) for hf, ours in _NAME_MAP]


# config.json sizes every family reads (required ones first); each must be a positive integer when present.
_REQUIRED_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_OWN_SIZE_NAMES = {"bloom": BLOOM_SIZE_KEYS}  # families whose config.json names the sizes its own way
_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from a transformers config.json dict; unsupported features are named, not ignored, and a
    missing or mistyped field is a one-line LmforgeError naming it."""
    if not isinstance(hf, dict):
        raise LmforgeError(f"a model config must be a JSON object, got {type(hf).__name__}")
    required = _OWN_SIZE_NAMES.get(hf.get("model_type"), _REQUIRED_SIZES)
    for key in required + _OPTIONAL_SIZES:
        value = hf.get(key)
        if value is None and key in required and hf.get("model_type") is not None:
            raise LmforgeError(f"config.json lacks {key!r}, which a {hf.get('model_type')} model needs")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise LmforgeError(f"config.json {key}={value!r} must be a positive integer")
    for key in ("rope_parameters", "rope_scaling"):
        if hf.get(key) is not None and not isinstance(hf[key], dict):
            raise LmforgeError(f"config.json {key} must be a JSON object or null, got {hf[key]!r}")
    try:
        return _config_from_hf(hf)
    except KeyError as err:
        raise LmforgeError(f"config.json lacks {err.args[0]!r}, which a {hf.get('model_type')} model needs") from None
    except (TypeError, ValueError, ZeroDivisionError) as err:
        if isinstance(err, LmforgeError):
            raise
        raise LmforgeError(f"config.json has a value of the wrong type or range: {err}") from None


def _config_from_hf(hf: dict) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type in SPARSE_ARCHITECTURES:
        return sparse_config_from_hf(hf)
    if model_type in _OTHER_MODEL_TYPES:
        return _OTHER_FAMILIES[_OTHER_MODEL_TYPES[model_type]][1](hf)
    if model_type not in _MODEL_TYPE_TO_FAMILY:
        supported = [*_MODEL_TYPE_TO_FAMILY, *_OTHER_MODEL_TYPES]
        raise LmforgeError(f"unsupported model_type {model_type!r}; supported: {', '.join(supported)}")
    family = _MODEL_TYPE_TO_FAMILY[model_type]
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise LmforgeError(f"unsupported hidden_act {act!r} for {model_type}; supported: silu (SwiGLU)")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if hf.get("use_sliding_window") or (family == "llama" and hf.get("sliding_window")):
        raise LmforgeError("sliding-window attention is supported for Mistral and Gemma3, not for this "
                           f"{model_type} checkpoint")
    attention_bias = bool(hf.get("attention_bias", False))
    n_heads = hf["num_attention_heads"]
    return ModelConfig.from_flat(
        family=family,
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        rope_scaling=rope_scaling_from_hf(rope, hf.get("max_position_embeddings", 2048)),
        sliding_window=hf.get("sliding_window") if family == "mistral" else None,
        qkv_bias=True if family == "qwen2" else attention_bias,
        o_bias=False if family == "qwen2" else attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        qk_norm=family == "qwen3",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=_single_id(hf.get("bos_token_id")),
        eos_token_id=_single_id(hf.get("eos_token_id")),
        pad_token_id=_single_id(hf.get("pad_token_id")),
    )


def _single_id(value) -> int | None:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict:
    """A config.json dict that transformers' classes for this family read back."""
    if cfg.family in SPARSE_ARCHITECTURES:
        return sparse_config_to_hf(cfg, dtype)
    if cfg.family in _OTHER_FAMILIES:
        return _OTHER_FAMILIES[cfg.family][2](cfg, dtype)
    if cfg.attention.layer_types is not None or (cfg.attention.sliding_window is not None and cfg.family != "mistral"):
        raise LmforgeError("sliding-window layers are exported only as family mistral (every layer) or gemma3")
    variants = dict(pos_embedding="rope", norm_position="pre", embed_scale=False, embed_norm=False, causal=True,
                    mlm_head=False, type_vocab_size=0, logn_train_len=None, rope_local_theta=None,
                    query_pre_attn_scalar=None, final_logit_softcap=None)
    flat = cfg.to_flat()  # the switches by their flat names, as the message shows them
    changed = {k: flat.get(k) for k, v in variants.items() if flat.get(k) != v}
    if changed:
        raise LmforgeError(f"cannot export {changed} as {cfg.family}: Hugging Face {cfg.family} has no such switch")
    if cfg.norms.kind != "rmsnorm" or cfg.ffn.kind != "swiglu":
        raise LmforgeError(f"cannot export norm={cfg.norms.kind!r} mlp={cfg.ffn.kind!r} as {cfg.family}: "
                           "Hugging Face Llama/Qwen need rmsnorm + swiglu")
    if cfg.family == "qwen2" and (not cfg.attention.qkv_bias or cfg.attention.o_bias):
        raise LmforgeError("qwen2 export needs qkv_bias=True and o_bias=False (Qwen2's fixed layout)")
    if cfg.family in ("llama", "qwen3") and cfg.attention.qkv_bias != cfg.attention.o_bias:
        raise LmforgeError(f"{cfg.family} export needs qkv_bias == o_bias (one attention_bias flag)")
    if cfg.attention.qk_norm != (cfg.family == "qwen3"):
        raise LmforgeError("qk_norm is exported only as family qwen3 (and qwen3 requires it)")
    hf = {
        "architectures": [HF_ARCHITECTURES[cfg.family]],
        "model_type": cfg.family,
        **hf_shape_fields(cfg),
        "num_key_value_heads": cfg.resolved_kv_heads,
        "head_dim": cfg.resolved_head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norms.eps,
        "rope_theta": cfg.positions.rope_theta,
        "rope_parameters": rope_parameters_to_hf(cfg.positions.rope_scaling, cfg.positions.rope_theta),
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.attention.o_bias if cfg.family != "qwen2" else True,
        "mlp_bias": cfg.ffn.bias,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }
    if cfg.family == "qwen2":
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    if cfg.family == "mistral":
        hf.update(sliding_window=cfg.attention.sliding_window)
    return hf


def _names(cfg: ModelConfig):
    """The name table of a family with its own adapter (a function of the config for BLOOM)."""
    table = _OTHER_FAMILIES[cfg.family][3]
    return table(cfg) if callable(table) else table


def state_dict_from_hf(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename HF tensors to lmforge names; a tied checkpoint's lm_head is the embedding."""
    state = {}
    if cfg.family in _OTHER_FAMILIES:
        state, hf_state = _names(cfg).from_hf(hf_state, cfg.family), {}
    for name, tensor in stack_experts(hf_state, cfg).items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # old checkpoints store the RoPE buffer; we recompute it
        ours = rename(name, _HF_TO_OURS)
        if ours is None:
            raise LmforgeError(f"unexpected tensor {name!r} in a {cfg.family} checkpoint")
        state[ours] = tensor
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        if "embed.weight" in state:
            state["lm_head.weight"] = state["embed.weight"]
    return state


def state_dict_to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename lmforge tensors to HF names; a tied lm_head is not written (transformers re-ties it)."""
    if cfg.family in _OTHER_FAMILIES:
        tied = cfg.tie_embeddings
        return _names(cfg).to_hf_state(
            {k: v for k, v in state.items() if not (tied and k == "lm_head.weight")}, cfg.family)
    out = {}
    for name, tensor in state.items():
        if cfg.tie_embeddings and name == "lm_head.weight":
            continue
        hf_name = rename(name, _OURS_TO_HF)
        if hf_name is None:
            raise LmforgeError(f"tensor {name!r} has no Hugging Face {cfg.family} equivalent")
        out[hf_name] = tensor
    return unstack_experts(out)
