"""Export an lmforge model to a GGUF file (llama.cpp's format) that llama.cpp and transformers' GGUF loader read.

The inverse of `gguf_import`: HF-named tensors get llama.cpp's names (`token_embd`, `blk.N.attn_q`, ...), Llama
Q/K rows are permuted for llama.cpp's interleaved RoPE, `{arch}.*` metadata describes the shape, and the tokenizer
(byte-level BPE vocabulary, merges, special ids, chat template) goes into `tokenizer.*` keys. Weights are written as
F32, F16, Q8_0, Q4_0 or Q4_K blocks with `gguf.quants` (the same block layouts the import dequantizes).
"""

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_arch import (
    GGUF_ARCH,
    NORM_SHIFT_ARCHITECTURES,
    PERMUTED_ARCHITECTURES,
    add_arch_metadata,
    gguf_name,
)
from lmforge.formats.gguf_arch_bloom import add_bloom_metadata, bloom_qkv_rows
from lmforge.formats.gguf_arch_t5 import add_t5_metadata, t5_export_state, t5_gguf_name
from lmforge.formats.gguf_kquant import QK_K, quantize_q4_k
from lmforge.formats.gguf_tokenizer import (
    _DIGITS_THEN_GPT2,
    _LLAMA3_SPLIT,
    _QWEN2_SPLIT,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
)
from lmforge.formats.gguf_tokenizer_t5 import add_unigram_metadata
from lmforge.formats.hf import config_to_hf, state_dict_to_hf
from lmforge.formats.hf_deepseek import stack_experts

EXPORT_ARCHITECTURES = (*GGUF_ARCH, "t5")  # lmforge families
Q = GGMLQuantizationType
# --type name -> (GGML type of 2-D weights, llama.cpp file type)
EXPORT_TYPES = {
    "f32": (Q.F32, LlamaFileType.ALL_F32),
    "f16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q4_k": (Q.Q4_K, LlamaFileType.MOSTLY_Q4_K_S),
}
_BLOCK = {Q.Q8_0: 32, Q.Q4_0: 32, Q.Q4_K: QK_K}  # inputs per block


def check_export(family: str, qtype: str) -> None:
    """Refuse an unknown --type or an architecture the writer does not know, before any weight is loaded."""
    if qtype not in EXPORT_TYPES:
        raise LmforgeError(f"unknown GGUF type {qtype!r}; valid: {', '.join(EXPORT_TYPES)}")
    if family not in EXPORT_ARCHITECTURES:
        raise LmforgeError(f"cannot export a {family!r} model to GGUF; supported architectures: "
                           f"{', '.join(EXPORT_ARCHITECTURES)}")


def write_gguf(model: torch.nn.Module, tokenizer, path: str | Path, qtype: str = "f16",
               generation_config: dict | None = None, name: str | None = None) -> dict[str, int]:
    """Write `model` (an lmforge Transformer) and `tokenizer` (lmforge Tokenizer or None) to `path` as GGUF.

    Returns the count of tensors per GGML type. The file is written next to `path` and renamed into place.
    """
    cfg = model.config
    check_export(cfg.family, qtype)
    if getattr(model, "quant_config", None) is not None:
        raise LmforgeError("cannot export an int8/int4 lmforge model to GGUF; load it in float first")
    if cfg.family == "t5":
        state = t5_export_state(model)
        tensors = ((t5_gguf_name(hf_name), tensor.numpy()) for hf_name, tensor in state.items())
        return _write(path, "t5", name or "t5", qtype, lambda writer: add_t5_metadata(writer, cfg), tensors,
                      tokenizer, cfg.vocab_size, generation_config)
    name = name or GGUF_ARCH[cfg.family]
    # transformers' GGUF loader turns a `llama` file named exactly "mistral" into model_type mistral, which gguf-py
    # has no tensor map for: it then cannot read the file at all.
    name = "Mistral" if name == "mistral" else name
    hf = config_to_hf(cfg)
    arch = GGUF_ARCH[cfg.family]
    window = cfg.attention.sliding_window
    if cfg.family == "mistral" and window is not None and window < cfg.max_seq_len:
        raise LmforgeError(f"cannot export mistral with sliding_window={window} < max_seq_len={cfg.max_seq_len} to "
                           "GGUF: llama.cpp writes Mistral as llama, which attends to the whole context")
    state = state_dict_to_hf({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, cfg)
    state = stack_experts(state, cfg) if arch == "qwen3moe" else state  # llama.cpp's ffn_*_exps: [E, out, in]

    def add_metadata(writer: GGUFWriter) -> None:
        if arch == "bloom":
            add_bloom_metadata(writer, hf)
        else:
            _add_model_metadata(writer, hf, cfg)
        add_arch_metadata(writer, arch, cfg, hf)

    # lazily, after add_metadata's checks: a refused layout fails before any tensor is converted
    tensors = ((gguf_name(hf_name, arch), _to_gguf_rows(hf_name, tensor, hf, arch))
               for hf_name, tensor in state.items())
    return _write(path, arch, name, qtype, add_metadata, tensors, tokenizer, cfg.vocab_size, generation_config)


def _write(path: str | Path, arch: str, name: str, qtype: str, add_metadata, tensors: Iterable[tuple[str, np.ndarray]],
           tokenizer, vocab_size: int, generation_config: dict | None) -> dict[str, int]:
    """Write the file next to `path` and rename it into place (never a half-written file at `path`)."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    writer = GGUFWriter(staging, arch)
    try:
        writer.add_name(name)
        writer.add_file_type(EXPORT_TYPES[qtype][1])
        writer.add_quantization_version(2)
        add_metadata(writer)
        if tokenizer is not None:
            add_tokenizer_metadata(writer, tokenizer, vocab_size, generation_config or {})
        counts: dict[str, int] = {}
        for gguf_tensor, values in tensors:
            # llama.cpp's quantizer keeps T5's relative position biases in F32 (they are added to every score)
            data, kind = _encode(values, Q.F32 if ".attn_rel_b." in gguf_tensor else EXPORT_TYPES[qtype][0])
            writer.add_tensor(gguf_tensor, data, raw_dtype=kind)
            counts[kind.name] = counts.get(kind.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        staging.replace(path)
    except BaseException:
        writer.close()
        staging.unlink(missing_ok=True)
        raise
    return counts


def _add_model_metadata(writer: GGUFWriter, hf: dict, cfg) -> None:
    """The `{arch}.*` keys llama.cpp's converter writes for every RoPE decoder (gguf_arch adds the rest)."""
    writer.add_block_count(hf["num_hidden_layers"])
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_key_length(hf["head_dim"])
    writer.add_value_length(hf["head_dim"])
    writer.add_rope_dimension_count(hf["head_dim"])
    writer.add_rope_freq_base(float(cfg.positions.rope_theta))
    writer.add_layer_norm_rms_eps(float(hf["rms_norm_eps"]))
    writer.add_vocab_size(hf["vocab_size"])
    scaling = cfg.positions.rope_scaling
    if scaling is not None:
        kind = scaling.get("rope_type") or scaling.get("type") if isinstance(scaling, dict) else None
        if kind not in ("linear", "yarn"):
            raise LmforgeError(f"cannot export RoPE scaling {scaling!r} to GGUF; supported: none, linear, yarn")
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        if "original_max_position_embeddings" in scaling:
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def _to_gguf_rows(hf_name: str, tensor: torch.Tensor, hf: dict, arch: str) -> np.ndarray:
    """float32 numpy in torch [out, in] order; Llama Q/K rows permuted as llama.cpp's converter `permute`s them,
    Gemma norms stored as 1 + w (its `norm_shift`)."""
    leaf = hf_name.split(".")[-2]
    if arch in PERMUTED_ARCHITECTURES and leaf in ("q_proj", "k_proj"):
        heads = hf["num_attention_heads"] if leaf == "q_proj" else hf["num_key_value_heads"]
        tensor = permute_rope_rows(tensor, heads)
    if arch in NORM_SHIFT_ARCHITECTURES and hf_name.endswith("norm.weight"):
        tensor = tensor + 1
    if arch == "bloom" and ".query_key_value." in hf_name:
        tensor = bloom_qkv_rows(tensor, hf["n_head"], to_gguf=True)
    return tensor.contiguous().numpy().astype(np.float32, copy=False)


def permute_rope_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's `permute` of Q/K rows: per head, the two rotary halves interleaved pairwise (the inverse of
    `gguf_import.unpermute_rope_rows`)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape).contiguous()


def _encode(values: np.ndarray, kind: GGMLQuantizationType) -> tuple[np.ndarray, GGMLQuantizationType]:
    """Norms and biases stay F32 (as llama.cpp keeps them); a row not a whole number of Q4_K blocks falls back to
    Q8_0 (as llama.cpp's quantizer does), one not a whole number of 32-blocks to F16."""
    if values.ndim == 1 or kind == Q.F32:
        return values, Q.F32
    if kind == Q.Q4_K and values.shape[-1] % QK_K:
        kind = Q.Q8_0
    if kind in _BLOCK and values.shape[-1] % _BLOCK[kind]:
        kind = Q.F16
    if kind == Q.F16:
        return values.astype(np.float16), Q.F16
    return (quantize_q4_k(values) if kind == Q.Q4_K else quantize(values, kind)), kind


def add_tokenizer_metadata(writer: GGUFWriter, tokenizer, vocab_size: int, generation_config: dict) -> None:
    """`tokenizer.ggml.*` keys for a byte-level BPE tokenizer (GPT-2 / SmolLM / Llama 3 / Qwen2 style) or a Unigram
    one (T5's SentencePiece, gguf_tokenizer_t5)."""
    spec = json.loads(tokenizer.backend.to_str())
    model = spec["model"]
    if model.get("type") == "Unigram":  # T5's SentencePiece
        add_unigram_metadata(writer, tokenizer, vocab_size)
        if tokenizer.chat_template:
            writer.add_chat_template(tokenizer.chat_template)
        return
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise LmforgeError(f"GGUF export writes byte-level BPE and Unigram tokenizers only; this one is "
                           f"{model.get('type')!r}"
                           f"{' with byte fallback (SentencePiece)' if model.get('byte_fallback') else ''}")
    by_id: dict[int, str] = {index: token for token, index in model["vocab"].items()}
    types = {index: TOKEN_NORMAL for index in by_id}
    for added in spec.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        types[added["id"]] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    token_types = [types.get(i, TOKEN_UNUSED) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
           "unk": tokenizer.unk_token_id}
    for key in ("bos", "eos", "pad"):
        ids[key] = ids[key] if ids[key] is not None else _single(generation_config.get(f"{key}_token_id"))
    for key, adder in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if ids[key] is not None:
            adder(ids[key])
    writer.add_add_bos_token(bool(tokenizer.add_bos_token))
    writer.add_add_eos_token(bool(tokenizer.add_eos_token))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _single(value) -> int | None:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def _pre_tokenizer_name(pre: dict | None) -> str:
    """The `tokenizer.ggml.pre` name llama.cpp (and lmforge's import) rebuilds this pre-tokenizer from."""
    steps = (pre.get("pretokenizers") or []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return _DIGITS_THEN_GPT2[0]
    if kinds[:1] == ["Split"]:
        regex = (steps[0].get("pattern") or {}).get("Regex")
        named = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}
        if regex in named:
            return named[regex]
    raise LmforgeError(f"cannot name this pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) for GGUF; "
                       "supported: GPT-2 byte level, SmolLM digits + byte level, Llama 3 and Qwen2 splits")
