"""Import a GGUF file (llama.cpp's format) as a Hugging Face-style checkpoint: config dict, HF-named state dict.

Tensors are dequantized with `gguf.quants` and llama.cpp's RoPE row permutation of Llama Q/K is undone, exactly
as transformers' GGUF loader does, so the HF adapter is lmforge's one loading path for both formats.
"""

import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_arch import (
    HF_CLASSES,
    LAYER_NAMES,
    NORM_SHIFT_ARCHITECTURES,
    PERMUTED_ARCHITECTURES,
    gguf_name,
    global_names,
    hf_layer_name,
)
from lmforge.formats.gguf_arch_bloom import bloom_qkv_rows, bloom_shapes
from lmforge.formats.gguf_arch_t5 import t5_hf_config, t5_hf_names
from lmforge.formats.gguf_config import SUPPORTED_ARCHITECTURES, gguf_hf_config
from lmforge.formats.gguf_file import GGUFFile, GGUFTensor, dequantize_tensor
from lmforge.formats.gguf_tokenizer import build_tokenizer

SUPPORTED_QUANT_TYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

_ARCH_OF = {model_type: arch for arch, (model_type, _) in HF_CLASSES.items()}
_ROPE_HEADS = {"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Precomputed Llama-3 RoPE frequency factors: read into hf_config["rope_scaling"], not a weight.
_IGNORED_TENSORS = ("rope_freqs.weight",)


@dataclass
class GGUFCheckpoint:
    """A GGUF file in Hugging Face form: what `config.json`, `model.safetensors` and `tokenizer.json` would hold."""

    architecture: str
    hf_config: dict
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    tokenizer_config: dict
    quant_types: dict[str, int]
    metadata: dict
    blocks: dict[str, "GGUFBlocks"] = field(default_factory=dict)  # HF name -> tensor left quantized (keep_blocks)


@dataclass
class GGUFBlocks:
    """A tensor `read_gguf` left in its GGUF blocks; `rope_heads`: undo llama.cpp's Q/K row permutation per that
    many heads (`unpermute_rope_rows`) after decoding, None when the rows are in order."""

    tensor: GGUFTensor
    rope_heads: int | None


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32,
              keep_blocks: Callable[[str, GGUFTensor], bool] | None = None) -> GGUFCheckpoint:
    """Read, check and dequantize a GGUF file into a `GGUFCheckpoint` with tensors of `dtype`.

    Tensors for which `keep_blocks(hf_name, tensor)` is true are not dequantized: `state_dict` holds a meta tensor
    of their shape and `blocks` their raw GGUF data (see lmforge.formats.gguf_quant).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LmforgeError(f"dtype must be a floating torch dtype (float32, bfloat16, float16); got {dtype!r}")
    reader = GGUFFile(path)  # memory-mapped: tensor bytes are read only when dequantized
    fields = reader.fields
    architecture = fields.get("general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise LmforgeError(
            f"unsupported GGUF architecture {architecture!r} in {path}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    if architecture == "t5":  # the encoder-decoder: its own names and config (gguf_arch_t5)
        hf_config = t5_hf_config(fields, tensors)
        names = t5_hf_names(tensors, hf_config)
    else:
        hf_config = gguf_hf_config(architecture, fields, tensors)
        _check_block_count(tensors, hf_config["num_hidden_layers"], architecture)
        names = _hf_names(tensors, hf_config, architecture)
    for name, tensor in tensors.items():
        if tensor.tensor_type.name not in SUPPORTED_QUANT_TYPES:
            raise LmforgeError(
                f"tensor {name!r} uses GGML type {tensor.tensor_type.name}, which lmforge cannot dequantize; "
                f"supported: {', '.join(SUPPORTED_QUANT_TYPES)}"
            )
    if architecture != "t5":
        _check_shapes(tensors, names, hf_config)

    def rope_heads(hf_name: str) -> int | None:
        permuted = architecture in PERMUTED_ARCHITECTURES and hf_name.split(".")[-2] in ("q_proj", "k_proj")
        return hf_config[_ROPE_HEADS[hf_name.split(".")[-2]]] if permuted else None

    def load(name: str) -> torch.Tensor:
        weight, hf_name = dequantize_tensor(tensors[name]), names[name]
        if heads := rope_heads(hf_name):
            weight = unpermute_rope_rows(weight, heads)
        if architecture in NORM_SHIFT_ARCHITECTURES and name.endswith("norm.weight"):
            weight = weight - 1  # Gemma's converter stored 1 + w
        if architecture == "bloom" and ".attn_qkv." in name:
            weight = bloom_qkv_rows(weight, hf_config["n_head"], to_gguf=False)
        return weight.to(dtype)

    kept = {hf: GGUFBlocks(tensors[name], rope_heads(hf)) for name, hf in names.items()
            if keep_blocks is not None and keep_blocks(hf, tensors[name]) and ".attn_qkv." not in name}
    to_load = [name for name, hf in names.items() if hf not in kept]
    # gguf's numpy dequantizers release the GIL for most of their work: one thread per core halves the wait.
    with ThreadPoolExecutor(max_workers=_usable_cpus()) as pool:
        state_dict = dict(zip((names[name] for name in to_load), pool.map(load, to_load), strict=True))
    for hf, block in kept.items():
        state_dict[hf] = torch.empty(tuple(int(d) for d in reversed(block.tensor.shape)), dtype=dtype, device="meta")
    tokenizer, tokenizer_config = build_tokenizer(fields)
    return GGUFCheckpoint(
        architecture=architecture,
        hf_config=hf_config,
        state_dict=state_dict,
        tokenizer=tokenizer,
        tokenizer_config=tokenizer_config,
        quant_types=dict(Counter(tensor.tensor_type.name for tensor in reader.tensors)),
        metadata={name.removeprefix("general."): v for name, v in fields.items() if name.startswith("general.")},
        blocks=kept,
    )


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: honours taskset / container CPU limits
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _hf_names(tensors: dict[str, GGUFTensor], config: dict, arch: str) -> dict[str, str]:
    """GGUF tensor name -> transformers state-dict name, for every tensor the model uses."""
    names, layer_names, globals_ = {}, LAYER_NAMES[arch], global_names(arch)
    global_suffixes = ("weight", "bias") if arch == "bloom" else ("weight",)
    for name in tensors:
        stem, _, suffix = name.rpartition(".")
        match = _LAYER_TENSOR.fullmatch(name)
        if stem in globals_ and suffix in global_suffixes:
            names[name] = f"{globals_[stem]}.{suffix}"
        elif match and match[2] in layer_names and int(match[1]) < config["num_hidden_layers"]:
            names[name] = hf_layer_name(arch, match[1], match[2], match[3])
        elif name not in _IGNORED_TENSORS:
            raise LmforgeError(
                f"unexpected tensor {name!r} in a {config['model_type']} GGUF with "
                f"{config['num_hidden_layers']} layers; lmforge knows: token_embd, output_norm, output, "
                f"blk.N.{{{', '.join(layer_names)}}}"
            )
    return names


def expected_shapes(config: dict) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(shape of every tensor a model of `config` may have, names it must have), in torch [out, in] order."""
    if config["model_type"] == "bloom":
        return bloom_shapes(config)
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}  # fmt: skip
    required = {"model.embed_tokens.weight", "model.norm.weight"}
    kind = config["model_type"]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        layer_shapes = {
            "input_layernorm.weight": (hidden,),
            "self_attn.q_proj.weight": (q_rows, hidden),
            "self_attn.k_proj.weight": (kv_rows, hidden),
            "self_attn.v_proj.weight": (kv_rows, hidden),
            "self_attn.o_proj.weight": (hidden, q_rows),
            "post_attention_layernorm.weight": (hidden,),
        }
        if kind == "qwen3_moe":
            experts, moe = config["num_experts"], config["moe_intermediate_size"]
            layer_shapes |= {"mlp.gate.weight": (experts, hidden), "mlp.experts.gate_proj": (experts, moe, hidden),
                             "mlp.experts.up_proj": (experts, moe, hidden),
                             "mlp.experts.down_proj": (experts, hidden, moe)}  # fmt: skip
        else:
            layer_shapes |= {"mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
                             "mlp.down_proj.weight": (hidden, inter)}  # fmt: skip
        if kind == "gemma3_text":
            layer_shapes |= {"pre_feedforward_layernorm.weight": (hidden,),
                             "post_feedforward_layernorm.weight": (hidden,)}  # fmt: skip
        required |= {prefix + name for name in layer_shapes}
        optional = {"self_attn.q_proj.bias": (q_rows,), "self_attn.k_proj.bias": (kv_rows,),
                    "self_attn.v_proj.bias": (kv_rows,), "self_attn.o_proj.bias": (hidden,)}  # fmt: skip
        norms = {"self_attn.q_norm.weight": (config["head_dim"],), "self_attn.k_norm.weight": (config["head_dim"],)}
        if kind in ("qwen3", "qwen3_moe", "gemma3_text"):
            required |= {prefix + name for name in norms}
        shapes.update({prefix + name: shape for name, shape in (layer_shapes | optional | norms).items()})
    if not config["tie_word_embeddings"]:
        required.add("lm_head.weight")
    return shapes, required


def _check_block_count(tensors: dict[str, GGUFTensor], block_count: int, architecture: str) -> None:
    """Refuse a block count the tensors do not bear out, before anything of that size is built."""
    layers = {int(m[1]) for name in tensors if (m := _LAYER_TENSOR.fullmatch(name))}
    if block_count > len(layers) or any(i not in layers for i in range(block_count)):
        held = f"blk.0..blk.{max(layers)}" if layers else "no blk.N tensors"
        raise LmforgeError(f"GGUF metadata {architecture}.block_count={block_count} but the file holds {held} "
                           f"({len(layers)} layer(s))")


def _check_shapes(tensors: dict[str, GGUFTensor], names: dict[str, str], config: dict) -> None:
    shapes, required = expected_shapes(config)
    missing = sorted(required - set(names.values()))
    if missing:
        raise LmforgeError(
            f"GGUF file lacks {len(missing)} tensor(s) a {config['model_type']} model needs, "
            f"e.g. {gguf_name(missing[0], _ARCH_OF[config['model_type']])!r} ({missing[0]})"
        )
    for name, hf_name in names.items():
        got = tuple(int(dim) for dim in reversed(tensors[name].shape))
        if got != shapes[hf_name]:
            raise LmforgeError(
                f"tensor {name!r} ({hf_name}) has shape {list(got)} but the metadata implies {list(shapes[hf_name])}"
            )


def unpermute_rope_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's `permute` of Q/K rows (per head: halves interleaved pairwise for its RoPE kernel)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape).contiguous()
