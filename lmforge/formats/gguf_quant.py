"""GGUF Q4_0 / Q4_1 blocks mapped straight into `Int4Linear` (group 32): the file's own 4-bit codes, no re-rounding.

Q4_1 stores w = d*q + m per block of 32 inputs (q in 0..15, fp16 d and m); Q4_0 stores w = d*(q - 8). The int4
kernel reads w = (q - 8)*s + z, so s = d and z = m + 8d (Q4_0: z = 0), both rounded to bf16 because that is the
only dtype the fast CPU kernel takes. "Where the layouts allow": Q8_0 (int8 with one fp16 scale per 32 inputs)
does not fit `Int8Linear`'s one scale per output row, and K-quants / F16 / F32 have no int4 group-32 form, so those
tensors are dequantized as usual (then quantized by `quantize_model` like any float layer).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_file import GGUFTensor
from lmforge.formats.gguf_import import GGUFBlocks, GGUFCheckpoint, read_gguf, unpermute_rope_rows
from lmforge.formats.hf import config_from_hf, state_dict_from_hf
from lmforge.formats.hf_dir import build_model
from lmforge.model.transformer import Transformer
from lmforge.quant.int_linear import (
    Int4Linear,
    QuantConfig,
    is_skipped,
    pack_nibbles,
    quantize_model,
    set_submodule,
    to_kernel_scales_and_zeros,
)

Q4_TYPES = ("Q4_0", "Q4_1")
GGUF_GROUP = 32  # inputs per Q4_0 / Q4_1 block
_HEADER_BYTES = {"Q4_0": 2, "Q4_1": 4}  # fp16 d (Q4_0); fp16 d, fp16 m (Q4_1); then 16 bytes of codes
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def q4_codes(tensor: GGUFTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, K] in 0..15, d float32 [N, K/32], m float32 [N, K/32]) with w = d*q + m exactly.

    Rows are in the file's order. Q4_0 has no m: it is -8d (exact in float32, so w = d*(q - 8) as llama.cpp has it).
    Within a block, byte j holds input j in its low nibble and input j + 16 in its high nibble.
    """
    kind = tensor.tensor_type.name
    if kind not in Q4_TYPES:
        raise LmforgeError(f"tensor {tensor.name!r} is {kind}; only {' and '.join(Q4_TYPES)} map to int4 codes")
    K = int(tensor.shape[0])
    blocks = np.asarray(tensor.data).reshape(-1, K // GGUF_GROUP, _HEADER_BYTES[kind] + GGUF_GROUP // 2)
    d = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32))
    m = (torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)) if kind == "Q4_1"
         else -8 * d)
    packed = torch.from_numpy(blocks[..., _HEADER_BYTES[kind]:].copy())
    codes = torch.cat((packed & 0x0F, packed >> 4), dim=-1).reshape(packed.shape[0], K)
    return codes, d, m


def q4_to_int4_linear(blocks: GGUFBlocks, bias: torch.Tensor | None = None) -> Int4Linear:
    """An `Int4Linear` (group 32) holding the file's codes, s = bf16(d), z = bf16(m + 8d), and `bias` (float)."""
    codes, d, m = q4_codes(blocks.tensor)
    if blocks.rope_heads:  # the same row permutation for codes, scales and minimums
        codes, d, m = (unpermute_rope_rows(t, blocks.rope_heads) for t in (codes, d, m))
    N, K = codes.shape
    module = Int4Linear(K, N, GGUF_GROUP, bias=bias is not None)
    if bias is not None:
        module.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    module.weight.copy_(pack_nibbles(codes))
    module.scales_and_zeros.copy_(to_kernel_scales_and_zeros(d, m + 8 * d))
    module.repack()
    return module


def dequantize_q4(blocks: GGUFBlocks) -> torch.Tensor:
    """The float32 weight [N, K] in torch order (what `read_gguf` would have returned)."""
    codes, d, m = q4_codes(blocks.tensor)
    weight = (codes.float().reshape(*d.shape, GGUF_GROUP) * d[..., None] + m[..., None]).reshape(codes.shape)
    return unpermute_rope_rows(weight, blocks.rope_heads) if blocks.rope_heads else weight


def keep_q4_projections(hf_name: str, tensor: GGUFTensor) -> bool:
    """`read_gguf` keep_blocks predicate: Q4_0 / Q4_1 weights of linear layers (never the embedding table)."""
    stem, _, suffix = hf_name.rpartition(".")
    is_linear = stem == "lm_head" or stem.rpartition(".")[2] in _PROJECTIONS
    return suffix == "weight" and is_linear and tensor.tensor_type.name in Q4_TYPES


@torch.no_grad()
def quantize_from_gguf_blocks(model: Transformer, blocks: dict[str, GGUFBlocks], hf_names: dict[str, str],
                              cfg: QuantConfig) -> Transformer:
    """Quantize `model` as `quantize_model(model, **cfg)` would, but int4 layers kept as GGUF blocks take the file's
    codes (`q4_to_int4_linear`). `blocks` is keyed by HF name; `hf_names` maps lmforge weight names to HF names.

    Kept layers that end up skipped or int8 (lm_head with head_bits 8) are dequantized and take the usual path.
    """
    if cfg.bits != 4 or cfg.group_size != GGUF_GROUP:
        raise LmforgeError(f"GGUF Q4 blocks map only to int4 group {GGUF_GROUP}; got bits {cfg.bits}, "
                           f"group_size {cfg.group_size}")
    for name, module in list(model.named_modules()):
        hf_name = hf_names.get(f"{name}.weight")
        if type(module) is not nn.Linear or hf_name not in blocks:
            continue
        if not is_skipped(name, cfg.skip) and cfg.bits_for(name) == 4:
            set_submodule(model, name, q4_to_int4_linear(blocks[hf_name], module.bias))
        else:
            module.weight = nn.Parameter(dequantize_q4(blocks[hf_name]).to(module.weight.dtype))
    leftover = [name for name, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise LmforgeError(f"GGUF blocks left unmapped: {', '.join(leftover[:3])}")
    return quantize_model(model, bits=4, group_size=GGUF_GROUP, skip=cfg.skip, head_bits=cfg.head_bits)


def read_gguf_int4(path: str | Path, cfg: QuantConfig,
                   dtype: torch.dtype = torch.float32) -> tuple[Transformer, GGUFCheckpoint]:
    """(int4 model, checkpoint) from a GGUF file: Q4_0 / Q4_1 linear layers straight from their blocks (never
    dequantized), everything else dequantized to `dtype` and quantized as `quantize_model` does (`cfg`)."""
    ckpt = read_gguf(path, keep_blocks=keep_q4_projections)
    if ckpt.architecture == "t5":
        raise LmforgeError(f"{path}: int4 straight from GGUF blocks reads decoder-only models; this file is t5 "
                           "(load it without gguf_int4 / --from-gguf-blocks)")
    model_cfg = config_from_hf(ckpt.hf_config)
    placeholders = {hf: ckpt.state_dict[hf] for hf in ckpt.blocks}
    hf_of = {id(tensor): hf for hf, tensor in placeholders.items()}  # renaming keeps the tensor objects
    hf_names = {name: hf_of[id(tensor)] for name, tensor in state_dict_from_hf(placeholders, model_cfg).items()}
    model = build_model(model_cfg, ckpt.state_dict, source=str(path), dtype=dtype)
    return quantize_from_gguf_blocks(model, ckpt.blocks, hf_names, cfg).eval(), ckpt
