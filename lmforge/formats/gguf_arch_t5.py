"""T5 in GGUF (llama.cpp's `t5` architecture): `enc.blk.N.*` / `dec.blk.N.*` tensor names, the `t5.*` keys, and
how llama.cpp's T5 graph runs a file, which a transformers config would describe otherwise.

llama.cpp runs the feed-forward as gated GELU (tanh form) when `ffn_gate` tensors exist and as ReLU otherwise, never
scales the decoder output by d_model^-0.5, takes the LM head from `output.weight` (the token embedding when that is
absent), and buckets relative positions up to a fixed max distance of 128 (t5.attention.relative_buckets_count
buckets). The import reads a file that way; the export writes a model so that llama.cpp computes the same logits:
the head is always written as `output.weight`, a scaled one as embedding * d_model^-0.5, and a layout llama.cpp
cannot run (another activation, another max distance) is refused.

transformers' GGUF loader (5.x) reads every t5 file as gated with a ReLU activation (it sets is_gated_act and leaves
feed_forward_proj "relu") and ignores t5.decoder_block_count, so for a flan-t5 style file it computes other logits
than llama.cpp and the original model; given the config (`feed_forward_proj="gated-gelu"`) it loads the same weights
and agrees.
"""

import re

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_file import GGUFTensor
from lmforge.formats.hf_t5 import t5_hf_state

T5_MAX_DISTANCE = 128  # llama.cpp's llama_relative_position_bucket: fixed, no GGUF key
T5_GLOBALS = {"token_embd.weight": "shared.weight", "output.weight": "lm_head.weight",
              "enc.output_norm.weight": "encoder.final_layer_norm.weight",
              "dec.output_norm.weight": "decoder.final_layer_norm.weight"}
_ATTN = {f"attn_{p}": f"layer.0.SelfAttention.{p}" for p in "qkvo"} | {"attn_norm": "layer.0.layer_norm"}
_CROSS = {f"cross_attn_{p}": f"layer.1.EncDecAttention.{p}" for p in "qkvo"} | {"cross_attn_norm": "layer.1.layer_norm"}


def _ffn(layer: int, gated: bool) -> dict[str, str]:
    up = "wi_1" if gated else "wi"
    names = {"ffn_norm": "layer_norm", "ffn_up": f"DenseReluDense.{up}", "ffn_down": "DenseReluDense.wo"}
    names |= {"ffn_gate": "DenseReluDense.wi_0"} if gated else {}
    return {leaf: f"layer.{layer}.{hf}" for leaf, hf in names.items()}


def t5_layer_names(gated: bool) -> dict[str, dict[str, str]]:
    """stack prefix ("enc" / "dec") -> GGUF leaf -> transformers name under `{stack}.block.N.`."""
    return {"enc": _ATTN | _ffn(1, gated), "dec": _ATTN | _CROSS | _ffn(2, gated)}


_LAYER = re.compile(r"(enc|dec)\.blk\.(\d+)\.(\w+)\.weight")
_STACK = {"enc": "encoder", "dec": "decoder"}
_REL_BIAS = "attn_rel_b"  # block 0 only: "layer.0.SelfAttention.relative_attention_bias"


def t5_hf_name(gguf_name: str, gated: bool) -> str | None:
    """The transformers name of a T5 GGUF tensor, None for a name llama.cpp's t5 does not have."""
    if gguf_name in T5_GLOBALS:
        return T5_GLOBALS[gguf_name]
    match = _LAYER.fullmatch(gguf_name)
    if not match:
        return None
    stack, layer, leaf = match[1], int(match[2]), match[3]
    if leaf == _REL_BIAS:
        return f"{_STACK[stack]}.block.0.layer.0.SelfAttention.relative_attention_bias.weight" if layer == 0 else None
    hf = t5_layer_names(gated)[stack].get(leaf)
    return f"{_STACK[stack]}.block.{layer}.{hf}.weight" if hf else None


def t5_gguf_name(hf_name: str) -> str:
    """The llama.cpp name of a transformers T5 tensor (the inverse of t5_hf_name)."""
    for gguf, hf in T5_GLOBALS.items():
        if hf == hf_name:
            return gguf
    stack, _, layer, rest = hf_name.removesuffix(".weight").split(".", 3)
    short = "enc" if stack == "encoder" else "dec"
    if rest.endswith("relative_attention_bias"):
        return f"{short}.blk.{layer}.{_REL_BIAS}.weight"
    leaves = {hf: leaf for gated in (True, False) for leaf, hf in t5_layer_names(gated)[short].items()}
    return f"{short}.blk.{layer}.{leaves[rest]}.weight"


def t5_hf_config(fields: dict, tensors: dict[str, GGUFTensor]) -> dict:
    """The transformers config.json dict of a `t5` GGUF, as llama.cpp runs it (see the module docstring)."""

    def get(key: str, default=None):
        value = fields.get(f"t5.{key}", default)
        if value is None:
            raise LmforgeError(f"GGUF metadata lacks t5.{key}, which a t5 model needs")
        if key != "attention.layer_norm_epsilon" and (isinstance(value, bool) or not isinstance(value, int)
                                                      or value < (0 if key == "decoder_start_token_id" else 1)):
            raise LmforgeError(f"GGUF metadata t5.{key}={value!r} must be a positive integer")
        return value

    vocab = fields.get("t5.vocab_size") or len(fields.get("tokenizer.ggml.tokens") or [])
    if not vocab:
        raise LmforgeError("GGUF metadata gives no vocabulary size (t5.vocab_size or tokenizer.ggml.tokens)")
    layers = get("block_count")
    gated = any(name.endswith(".ffn_gate.weight") for name in tensors)
    return {
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": vocab,
        "d_model": get("embedding_length"), "d_kv": get("attention.key_length"), "d_ff": get("feed_forward_length"),
        "num_heads": get("attention.head_count"), "num_layers": layers,
        "num_decoder_layers": get("decoder_block_count", layers),
        "relative_attention_num_buckets": get("attention.relative_buckets_count"),
        "relative_attention_max_distance": T5_MAX_DISTANCE,
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        "layer_norm_epsilon": fields.get("t5.attention.layer_norm_rms_epsilon")
        or get("attention.layer_norm_epsilon"),
        "scale_decoder_outputs": False, "tie_word_embeddings": "output.weight" not in tensors,
        "n_positions": get("context_length", 512), "decoder_start_token_id": get("decoder_start_token_id", 0),
        "pad_token_id": fields.get("tokenizer.ggml.padding_token_id", 0),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id", 1),
    }


def t5_hf_names(tensors: dict[str, GGUFTensor], config: dict) -> dict[str, str]:
    """GGUF name -> transformers name for every tensor, after checking names, layer counts and shapes."""
    gated = config["feed_forward_proj"].startswith("gated")
    for short, key in (("enc", "num_layers"), ("dec", "num_decoder_layers")):  # before anything of that size
        held = {int(m[2]) for name in tensors if (m := _LAYER.fullmatch(name)) and m[1] == short}
        if any(i not in held for i in range(config[key])):
            raise LmforgeError(f"GGUF metadata gives {config[key]} {short} layers ({key}) but the file holds "
                               f"{len(held)} {short}.blk.N block(s)")
    shapes = t5_shapes(config)
    names = {}
    for name, tensor in tensors.items():
        hf = t5_hf_name(name, gated)
        if hf is None or hf not in shapes:
            raise LmforgeError(f"unexpected tensor {name!r} in a t5 GGUF with {config['num_layers']} encoder and "
                               f"{config['num_decoder_layers']} decoder layers; lmforge knows token_embd, output, "
                               "enc/dec.output_norm, enc/dec.blk.N.{attn_*, cross_attn_*, ffn_*}, blk.0.attn_rel_b")
        got = tuple(int(d) for d in reversed(tensor.shape))
        if got != shapes[hf]:
            raise LmforgeError(f"tensor {name!r} ({hf}) has shape {list(got)} but the metadata implies "
                               f"{list(shapes[hf])}")
        names[name] = hf
    missing = sorted(set(shapes) - set(names.values()) - {"lm_head.weight"})
    if missing:
        raise LmforgeError(f"GGUF file lacks {len(missing)} tensor(s) a t5 model needs, e.g. "
                           f"{t5_gguf_name(missing[0])!r} ({missing[0]})")
    return names


def t5_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """transformers name -> torch shape of every tensor a T5 of `config` has."""
    dim, inner, ff = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
    gated = config["feed_forward_proj"].startswith("gated")
    shapes = {hf: (config["vocab_size"], dim) for hf in ("shared.weight", "lm_head.weight")}
    shapes |= {f"{s}.final_layer_norm.weight": (dim,) for s in ("encoder", "decoder")}
    sizes = {"q": (inner, dim), "k": (inner, dim), "v": (inner, dim), "o": (dim, inner), "layer_norm": (dim,),
             "wi_0": (ff, dim), "wi_1": (ff, dim), "wi": (ff, dim), "wo": (dim, ff)}
    for short, stack, count in (("enc", "encoder", config["num_layers"]),
                                ("dec", "decoder", config["num_decoder_layers"])):
        shapes[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            config["relative_attention_num_buckets"], config["num_heads"])
        for layer in range(count):
            for hf in t5_layer_names(gated)[short].values():
                shapes[f"{stack}.block.{layer}.{hf}.weight"] = sizes[hf.rpartition(".")[2]]
    return shapes


def t5_export_state(model) -> dict[str, torch.Tensor]:
    """transformers-named float32 tensors of an lmforge T5Model as llama.cpp should hold them: `output.weight`
    always written (a scaled head folded into it), so llama.cpp and transformers both read an unscaled, untied head."""
    cfg = model.config
    if cfg.feed_forward not in ("relu", "gated-gelu", "gated-gelu_new"):
        raise LmforgeError(f"cannot export a T5 with feed_forward={cfg.feed_forward!r} to GGUF: llama.cpp's t5 runs "
                           "gated GELU (tanh) when ffn_gate exists and ReLU otherwise; supported: relu, gated-gelu")
    if cfg.max_distance != T5_MAX_DISTANCE:
        raise LmforgeError(f"cannot export a T5 with relative_attention_max_distance={cfg.max_distance} to GGUF: "
                           f"llama.cpp fixes it at {T5_MAX_DISTANCE}")
    state = t5_hf_state(model)
    head = model.lm_head.weight.detach().float().cpu()
    state["lm_head.weight"] = head * cfg.dim ** -0.5 if cfg.scale_decoder_outputs else head
    return state


def add_t5_metadata(writer, cfg) -> None:
    """The `t5.*` keys convert_hf_to_gguf.py's T5Model writes (plus vocab_size)."""
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_feed_forward_length(cfg.ffn_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_decoder_block_count(cfg.n_decoder_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_eps(float(cfg.norm_eps))
    writer.add_relative_attn_buckets_count(cfg.num_buckets)
    writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
    writer.add_decoder_start_token_id(cfg.decoder_start_token_id)
    writer.add_vocab_size(cfg.vocab_size)
