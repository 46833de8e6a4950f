"""BLOOM in GGUF (llama.cpp's `bloom` architecture): its config keys, tensor shapes and fused-QKV row order.

llama.cpp's converter stores BLOOM's fused query_key_value rows GPT-style ([q of all heads; k; v]) where
transformers keeps them per head ([head, q|k|v, channel]); `bloom_qkv_rows` converts either way.
"""

import torch

BLOOM_GLOBALS = {"token_embd": "transformer.word_embeddings",
                 "token_embd_norm": "transformer.word_embeddings_layernorm", "output_norm": "transformer.ln_f",
                 "output": "lm_head"}
BLOOM_LAYERS = {"attn_norm": "input_layernorm", "attn_qkv": "self_attention.query_key_value",
                "attn_output": "self_attention.dense", "ffn_norm": "post_attention_layernorm",
                "ffn_up": "mlp.dense_h_to_4h", "ffn_down": "mlp.dense_4h_to_h"}


def bloom_config(get, fields: dict, tensors: dict, vocab_size: int) -> dict:
    """config.json of a `bloom` GGUF (BLOOM's own key names, plus the common ones the shape checks read)."""
    hidden, heads, layers = get("embedding_length"), get("attention.head_count"), get("block_count")
    return {
        "model_type": "bloom", "architectures": ["BloomForCausalLM"], "vocab_size": vocab_size,
        "hidden_size": hidden, "n_layer": layers, "n_head": heads, "num_hidden_layers": layers,
        "num_attention_heads": heads, "layer_norm_epsilon": get("attention.layer_norm_epsilon"),
        "seq_length": get("context_length", False), "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": fields.get("tokenizer.ggml.padding_token_id"),
    }


def bloom_shapes(config: dict) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(shape of every tensor, names required) of a BLOOM model, in torch [out, in] order."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    shapes = {"transformer.word_embeddings.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    for norm in ("transformer.word_embeddings_layernorm", "transformer.ln_f"):
        shapes |= {f"{norm}.weight": (hidden,), f"{norm}.bias": (hidden,)}
    for layer in range(config["n_layer"]):
        prefix = f"transformer.h.{layer}."
        for name, (rows, cols) in {"input_layernorm": (hidden, None), "post_attention_layernorm": (hidden, None),
                                   "self_attention.query_key_value": (3 * hidden, hidden),
                                   "self_attention.dense": (hidden, hidden), "mlp.dense_h_to_4h": (4 * hidden, hidden),
                                   "mlp.dense_4h_to_h": (hidden, 4 * hidden)}.items():
            shapes[f"{prefix}{name}.bias"] = (rows,)
            shapes[f"{prefix}{name}.weight"] = (rows,) if cols is None else (rows, cols)
    required = set(shapes) - ({"lm_head.weight"} if config["tie_word_embeddings"] else set())
    return shapes, required


def bloom_qkv_rows(weight: torch.Tensor, heads: int, to_gguf: bool) -> torch.Tensor:
    """Fused QKV rows per head (transformers) <-> q, k, v blocks (llama.cpp's converter)."""
    split = (heads, 3) if to_gguf else (3, heads)
    return weight.reshape(*split, -1, *weight.shape[1:]).transpose(0, 1).reshape(weight.shape).contiguous()


def add_bloom_metadata(writer, hf: dict) -> None:
    """The `bloom.*` keys convert_hf_to_gguf.py's BloomModel writes."""
    hidden = hf["hidden_size"]
    writer.add_context_length(hf["seq_length"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(4 * hidden)
    writer.add_block_count(hf["n_layer"])
    writer.add_head_count(hf["n_head"])
    writer.add_head_count_kv(hf["n_head"])
    writer.add_layer_norm_eps(hf["layer_norm_epsilon"])
    writer.add_vocab_size(hf["vocab_size"])
