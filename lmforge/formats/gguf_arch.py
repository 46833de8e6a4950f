"""The per-architecture parts of GGUF (llama.cpp's format): tensor names, `{arch}.*` keys, stored-weight quirks.

One table per llama.cpp architecture that lmforge and transformers' GGUF loader both read: llama (also Mistral,
which llama.cpp's converter writes as `llama`), qwen2, qwen3, qwen3moe (stacked `ffn_*_exps` experts) and gemma3
(sandwich norms stored as 1 + w, as llama.cpp's converter adds its norm shift), bloom (gguf_arch_bloom.py) and the
encoder-decoder t5 (gguf_arch_t5.py).
"""

import logging

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_arch_bloom import BLOOM_GLOBALS, BLOOM_LAYERS

# lmforge family -> llama.cpp architecture (`general.architecture`)
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
             "gemma3": "gemma3", "bloom": "bloom"}
# llama.cpp architecture -> (transformers model_type, class)
HF_CLASSES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
              "qwen3": ("qwen3", "Qwen3ForCausalLM"), "qwen3moe": ("qwen3_moe", "Qwen3MoeForCausalLM"),
              "gemma3": ("gemma3_text", "Gemma3ForCausalLM"), "bloom": ("bloom", "BloomForCausalLM")}
# llama.cpp's converter permutes Q/K rows of Llama-arch models for its interleaved RoPE; the others are not.
PERMUTED_ARCHITECTURES = ("llama",)
# Gemma stores its (1 + w) RMSNorm weights with the 1 added (convert_hf_to_gguf.py's `norm_shift`).
NORM_SHIFT_ARCHITECTURES = ("gemma3",)
# llama.cpp's Gemma 3: 5 sliding-window layers then a global one, local RoPE base 10000, attention scaled by
# head_dim^-0.5 (transformers' Gemma3TextConfig defaults say the same for the sliding pattern and local base).
GEMMA3_SLIDING_PATTERN, GEMMA3_LOCAL_THETA = 6, 10000.0
# transformers' GGUF loader (5.x) maps no qwen3.attention.key_length: it builds every qwen3 file with
# Qwen3Config's default head_dim, 128 (that of every released Qwen3). llama.cpp and lmforge's import read the key.
TRANSFORMERS_QWEN3_HEAD_DIM = 128

logger = logging.getLogger(__name__)

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_DENSE = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
          "attn_norm": "input_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
_LLAMA = _DENSE | {"ffn_norm": "post_attention_layernorm"}
_GEMMA3 = _DENSE | {"post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
                    "post_ffw_norm": "post_feedforward_layernorm"}
# Stacked experts have no `.weight` suffix in lmforge's HF-side names (hf_deepseek.stack_experts' layout).
EXPERT_NAMES = {"ffn_gate_exps": "mlp.experts.gate_proj", "ffn_up_exps": "mlp.experts.up_proj",
                "ffn_down_exps": "mlp.experts.down_proj"}
_QWEN3MOE = {k: v for k, v in _LLAMA.items() if not k.startswith("ffn_") or k == "ffn_norm"} | {
    "ffn_gate_inp": "mlp.gate", **EXPERT_NAMES}
LAYER_NAMES = {"llama": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "qwen3moe": _QWEN3MOE, "gemma3": _GEMMA3,
               "bloom": BLOOM_LAYERS}
_LAYER_PREFIX = {"bloom": "transformer.h"}  # the others: model.layers


def global_names(arch: str) -> dict[str, str]:
    return BLOOM_GLOBALS if arch == "bloom" else GLOBAL_NAMES


def hf_layer_name(arch: str, layer: str, leaf: str, suffix: str) -> str:
    """HF name of `blk.{layer}.{leaf}.{suffix}` (stacked experts: no suffix)."""
    if leaf in EXPERT_NAMES:
        return f"model.layers.{layer}.{EXPERT_NAMES[leaf]}"
    return f"{_LAYER_PREFIX.get(arch, 'model.layers')}.{layer}.{LAYER_NAMES[arch][leaf]}.{suffix}"


def gguf_name(hf_name: str, arch: str = "llama") -> str:
    """The llama.cpp name of a transformers state-dict name (the inverse of the import mapping)."""
    stem, _, suffix = hf_name.rpartition(".")
    for gguf_stem, hf_stem in global_names(arch).items():
        if stem == hf_stem:
            return f"{gguf_stem}.{suffix}"
    experts = {hf: gguf for gguf, hf in EXPERT_NAMES.items()}
    _, _, layer, rest = hf_name.split(".", 3)
    if rest in experts:
        return f"blk.{layer}.{experts[rest]}.weight"
    leaf = {hf: gguf for gguf, hf in LAYER_NAMES[arch].items()}[rest.rpartition(".")[0]]
    return f"blk.{layer}.{leaf}.{suffix}"


def arch_config(arch: str, get) -> dict:
    """The config.json keys beyond the dense Llama set that `{arch}.*` metadata gives (get(key, required))."""
    if arch == "qwen3moe":
        return {"num_experts": get("expert_count"), "num_experts_per_tok": get("expert_used_count"),
                "moe_intermediate_size": get("expert_feed_forward_length"),
                "norm_topk_prob": True,  # llama.cpp's qwen3moe graph always renormalises the top-k weights
                "decoder_sparse_step": 1, "mlp_only_layers": []}
    if arch == "gemma3":
        head_dim = get("attention.key_length")
        return {"hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": head_dim,
                "sliding_window": get("attention.sliding_window"), "sliding_window_pattern": GEMMA3_SLIDING_PATTERN,
                "rope_local_base_freq": GEMMA3_LOCAL_THETA, "final_logit_softcapping": None}
    return {}


def check_gemma3_export(cfg) -> None:
    """Refuse a Gemma 3 layout llama.cpp's gemma3 graph (and transformers reading the file) would run differently."""
    att, pos = cfg.attention, cfg.positions
    pattern = tuple("full" if (i + 1) % GEMMA3_SLIDING_PATTERN == 0 else "sliding" for i in range(cfg.n_layers))
    problems = {
        "query_pre_attn_scalar": (att.query_pre_attn_scalar or cfg.resolved_head_dim, cfg.resolved_head_dim),
        "rope_local_theta": (pos.rope_local_theta or GEMMA3_LOCAL_THETA, GEMMA3_LOCAL_THETA),
        "final_logit_softcap": (cfg.heads.final_logit_softcap, None),
        "layer_types": (att.layer_types or pattern, pattern),
    }
    wrong = {k: got for k, (got, want) in problems.items() if got != want}
    if wrong:
        raise LmforgeError(f"cannot export this gemma3 model to GGUF: llama.cpp's gemma3 fixes query_pre_attn_scalar"
                           f"=head_dim, rope_local_theta=10000, no final softcap, 5 sliding : 1 global; got {wrong}")


def add_arch_metadata(writer, arch: str, cfg, hf: dict) -> None:
    """The `{arch}.*` keys convert_hf_to_gguf.py adds for MoE and Gemma 3 models (and a qwen3 caveat)."""
    if arch == "qwen3moe":
        if hf["mlp_only_layers"] or hf["decoder_sparse_step"] != 1:
            raise LmforgeError("cannot export qwen3_moe with dense layers to GGUF: llama.cpp's qwen3moe has experts "
                               f"in every layer (mlp_only_layers={hf['mlp_only_layers']}, "
                               f"decoder_sparse_step={hf['decoder_sparse_step']})")
        if not cfg.moe.norm_topk_prob:
            raise LmforgeError("cannot export qwen3_moe with norm_topk_prob=False to GGUF: llama.cpp's qwen3moe "
                               "always renormalises the top-k routing weights")
        writer.add_expert_count(hf["num_experts"])
        writer.add_expert_used_count(hf["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(hf["moe_intermediate_size"])
    if arch == "gemma3":
        check_gemma3_export(cfg)
        writer.add_sliding_window(hf["sliding_window"])
    if arch == "qwen3" and hf["head_dim"] != TRANSFORMERS_QWEN3_HEAD_DIM:
        logger.warning("qwen3 head_dim %d is written as qwen3.attention.key_length, which llama.cpp and lmforge read "
                       "but transformers' GGUF loader ignores (it assumes %d): transformers cannot load this file",
                       hf["head_dim"], TRANSFORMERS_QWEN3_HEAD_DIM)
