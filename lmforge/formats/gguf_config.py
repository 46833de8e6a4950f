"""The transformers `config.json` a GGUF file's `{arch}.*` metadata describes (llama.cpp's key names), with RoPE
scaling and Llama-3 frequency factors; split from gguf_import so that file keeps to reading tensors.
"""

import logging
from typing import Any

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_arch import HF_CLASSES, arch_config
from lmforge.formats.gguf_arch_bloom import bloom_config
from lmforge.formats.gguf_file import GGUFTensor, dequantize_tensor
from lmforge.model.rope_scaling import llama3_from_freq_factors

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES: tuple[str, ...] = (*HF_CLASSES, "t5")  # t5: gguf_arch_t5
_SIZE_KEYS = ("embedding_length", "attention.head_count", "attention.head_count_kv", "attention.key_length",
              "rope.dimension_count", "vocab_size", "feed_forward_length", "block_count", "context_length")


def gguf_hf_config(architecture: str, fields: dict, tensors: dict[str, GGUFTensor]) -> dict:
    """The transformers `config.json` dict that llama.cpp's `{arch}.*` keys describe."""

    def get(key: str, required: bool = True) -> Any:
        value = fields.get(f"{architecture}.{key}")
        if isinstance(value, list):  # per-layer values: lmforge models use one value for every layer
            if len(set(value)) != 1:
                raise LmforgeError(f"{architecture}.{key} varies per layer ({value}); lmforge needs one value")
            value = value[0]
        if value is None and required:
            raise LmforgeError(f"GGUF metadata lacks {architecture}.{key}, which a {architecture} model needs")
        if value is not None and key in _SIZE_KEYS and (isinstance(value, bool) or not isinstance(value, int)
                                                        or value <= 0):
            raise LmforgeError(f"GGUF metadata {architecture}.{key}={value!r} must be a positive integer")
        return value

    hidden, heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", False) or get("rope.dimension_count", False) or hidden // heads
    vocab_size = get("vocab_size", False) or len(fields.get("tokenizer.ggml.tokens") or [])
    if not vocab_size:
        raise LmforgeError(
            f"GGUF metadata gives no vocabulary size ({architecture}.vocab_size or tokenizer.ggml.tokens)"
        )
    if architecture == "bloom":  # LayerNorm + ALiBi: none of the RoPE / RMSNorm keys below
        return bloom_config(get, fields, tensors, vocab_size)
    config = {
        "model_type": HF_CLASSES[architecture][0],
        "architectures": [HF_CLASSES[architecture][1]],
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", False) or heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base", False) or 10000.0,
        "max_position_embeddings": get("context_length"),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": fields.get("tokenizer.ggml.padding_token_id"),
        **arch_config(architecture, get),
    }
    rope_type, factor = get("rope.scaling.type", False), get("rope.scaling.factor", False)
    if rope_type is None and get("rope.scale_linear", False):  # older files
        rope_type, factor = "linear", get("rope.scale_linear")
    if rope_type not in (None, "none"):
        config["rope_scaling"] = {"rope_type": rope_type, "factor": factor}
        if original := get("rope.scaling.original_context_length", False):
            config["rope_scaling"]["original_max_position_embeddings"] = original
    if "rope_freqs.weight" in tensors:
        config["rope_scaling"] = rope_scaling_from_freq_factors(
            dequantize_tensor(tensors["rope_freqs.weight"]).reshape(-1).tolist(), head_dim, config["rope_theta"],
            get("rope.scaling.original_context_length", False) or 8192)
    return config


def rope_scaling_from_freq_factors(factors: list[float], head_dim: int, theta: float, original: int) -> dict:
    """Llama 3.1+ GGUFs store RoPE frequency divisors (rope_freqs), not the parameters: name them as llama3
    scaling when they match it (then the model exports to transformers too), else apply them as they are."""
    if len(factors) != head_dim // 2:
        raise LmforgeError(f"rope_freqs.weight has {len(factors)} values, expected head_dim/2 = {head_dim // 2}")
    llama3 = llama3_from_freq_factors(factors, head_dim, theta, original)
    if llama3 is None:
        logger.warning("rope_freqs.weight does not match Llama-3 scaling; applying its %d factors directly "
                       "(the model will not export to transformers)", len(factors))
    return llama3 or {"rope_type": "freq_factors", "factors": factors}
