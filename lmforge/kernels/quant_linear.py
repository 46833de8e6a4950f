"""lmforge's int8 and int4 linears (csrc/linear_int8.cpp, csrc/linear_int4.cpp): the codes dequantized in registers,
so that a decode step streams one byte (int8) or half a byte (int4) per weight from memory, as llama.cpp's Q8_0 /
Q4_1 dot products do, instead of PyTorch's _weight_int8pack_mm / _weight_int4pack_mm_for_cpu.

lmforge.quant's Int8Linear / Int4Linear use them when the kernels are loaded already (`prepare_for_inference` loads
them) and run on their AVX-512 path (AVX-512 with AVX512-BF16); the packed layouts are built from the saved ones on
first use (the saved format does not change). The instruction set is chosen at run time: `set_isa("avx2")` forces the
AVX2 path (tests), as does `ATEN_CPU_CAPABILITY=avx2`, the switch of the float kernels. As with the float32 kernel,
the layers keep PyTorch's ops at AVX2 width, where the kernels measured slower (Zen 5, one thread, a 3072 x 576
layer: AVX-512 path int8 36 / int4 23 us at 1 row vs PyTorch's 54 / 51, 3756 / 2633 vs 6055 / 5532 at 256 rows;
AVX2 path 57 / 70 at 1 row, 8831 / 16792 at 256).

Int8 activations: where the build has AVX512-VNNI (`vnni()`), the layers quantize each input row per block of 32
channels to int8 (one float scale per block, as llama.cpp's Q8_0 / Q8_1) and multiply int8 by int8 in registers
(csrc/int8_dot.h), int32 per block; the int8 weights are then packed as `pack_linear_int8_vnni`'s layout. This changes
results against weight-only quantization as llama.cpp's does (docs/benchmarks.md measures it on SmolLM2):
LMFORGE_INT8_ACTIVATIONS=0 keeps the weight-only path (bf16 inputs times the dequantized codes).
"""

import os
import sys

import torch

from lmforge.kernels.cpu_kernels import loaded_ops

ISAS = ("avx512", "avx2", "default")
LAYER_ISA = "avx512"  # the path the layers use the kernels on
_isa: dict[int, str] = {}  # id(ops) -> the instruction set its quantized linears run on
INT8_ACTIVATIONS_ENV = "LMFORGE_INT8_ACTIVATIONS"  # "0": weight-only (bf16 activations); else int8 where VNNI runs


_OFF, _ON = ("0", "false", "off", "no"), ("", "1", "true", "on", "yes")


def int8_activations_requested(environ=os.environ) -> bool:
    """LMFORGE_INT8_ACTIVATIONS: 0 / false / off / no ask for weight-only layers; unset, 1 / true / on / yes for int8
    activations; anything else warns (a typo must not pass for a choice) and keeps them on."""
    value = environ.get(INT8_ACTIVATIONS_ENV, "1").strip().lower()
    if value not in _OFF + _ON:
        print(f"warning: {INT8_ACTIVATIONS_ENV}={value!r} is none of 0/1, false/true, off/on, no/yes; int8 "
              f"activations stay on", file=sys.stderr)
    return value not in _OFF


_int8_activations = int8_activations_requested()


def isa() -> str:
    """The instruction set the kernels run on: "avx512", "avx2" or "none" (also when the kernels are not loaded; never
    starts a build)."""
    ops = loaded_ops()
    if ops is None:
        return "none"
    if id(ops) not in _isa:
        try:
            _isa[id(ops)] = ops.quant_linear_isa("")
        except (AttributeError, RuntimeError):  # a library built from older sources
            _isa[id(ops)] = "none"
    return _isa[id(ops)]


def quant_linear_ops():
    """torch.ops.lmforge when it is loaded (never starts a build) and its int8 / int4 linears run on their AVX-512
    path, else None: the layers' test."""
    return loaded_ops() if isa() == LAYER_ISA else None


def set_isa(name: str) -> str:
    """Run the kernels on `name` ("avx512", "avx2", or "default": the best this CPU and build have); returns it."""
    if name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}; valid: {', '.join(ISAS)}")
    ops = loaded_ops()
    if ops is None or isa() == "none":
        raise RuntimeError("lmforge's quantized linear kernels are not loaded on this machine")
    _isa[id(ops)] = ops.quant_linear_isa(name)
    _int4_x[0] = None
    return _isa[id(ops)]


def vnni() -> bool:
    """Whether the kernels run the int8 x int8 path (AVX512-VNNI in this build, the AVX-512 path running)."""
    ops = loaded_ops()
    if ops is None or isa() != "avx512":
        return False
    try:
        return bool(ops.quant_linear_vnni())
    except (AttributeError, RuntimeError):  # a library built from older sources
        return False


def int8_activations() -> bool:
    """Whether the layers quantize their inputs to int8 (LMFORGE_INT8_ACTIVATIONS, default on) and the kernels can."""
    return _int8_activations and vnni()


def set_int8_activations(enabled: bool) -> bool:
    """Turn int8 activations on or off for this process (as LMFORGE_INT8_ACTIVATIONS); returns the previous setting.
    int8 layers keep the layout they were packed in until repacked; int4 layers follow at once."""
    global _int8_activations
    previous, _int8_activations = _int8_activations, bool(enabled)
    _int4_x[0] = None
    return previous


_int4_x: list[bool | None] = [None]  # int8_activations() cached for int4_linear's per-call flag


def pack_int8(weight: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] codes -> the int8 kernel's layout: [N/32, K/32 * 8, 32, 4] unsigned bytes (q + 128) for int8
    activations, else [N/32, K, 32]."""
    if int8_activations():
        return torch.ops.lmforge.pack_linear_int8_vnni(weight)
    return torch.ops.lmforge.pack_linear_int8(weight)


def pack_int4(nibbles: torch.Tensor, scales_and_zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int4Linear's saved tensors (uint8 [N, K/2] nibbles, bf16 [K/G, N, 2]) -> the int4 kernel's layouts."""
    return (torch.ops.lmforge.pack_linear_int4(nibbles),
            torch.ops.lmforge.pack_int4_scales(scales_and_zeros.to(torch.bfloat16)))


def int8_linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor | None,
                out_features: int, float_out: bool = False) -> torch.Tensor:
    """(x @ (q * s).T + bias) for bf16 x [..., K], from (pack_int8's codes, float32 scales): bf16, or float32 sums
    unrounded with `float_out`. The op is called directly: a decode step makes ~200 such calls."""
    return torch.ops.lmforge.linear_int8.default(x, *packed, bias, out_features, float_out)


def int4_linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor | None,
                out_features: int, float_out: bool = False) -> torch.Tensor:
    """(x @ ((q - 8) * s + z).T + bias) for bf16 x [..., K], from `pack_int4`'s pair; x quantized to int8 per block
    of 32 where `int8_activations()` and the group size is a multiple of 32."""
    if _int4_x[0] is None:
        _int4_x[0] = int8_activations()
    return torch.ops.lmforge.linear_int4.default(x, *packed, bias, out_features, float_out, _int4_x[0])


def unpack_int8(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """pack_int8's layout -> the int8 [N, K] codes it was packed from (the saved layout)."""
    if packed.dim() == 4:  # [N/32, K/4, 32, 4] of q + 128
        codes = (packed.view(torch.int8) ^ -128).permute(0, 2, 1, 3).reshape(-1, packed.shape[1] * 4)
        return codes[:out_features, :in_features].contiguous()
    return packed.permute(0, 2, 1).reshape(-1, packed.shape[1])[:out_features].contiguous()


def unpack_int4(packed: tuple[torch.Tensor, torch.Tensor], out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pack_int4's pair -> Int4Linear's saved tensors (uint8 [N, K/2] nibbles, bf16 [K/G, N, 2]). A packed lane
    holds 8 channels: bits 4p.. the low nibble of byte p, bits 16 + 4p.. its high nibble (csrc/linear_int4.cpp)."""
    codes, scales = packed
    lanes = codes.view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # [N/32, K/8, 32]
    shifts = torch.arange(4, dtype=torch.int64) * 4
    low, high = (lanes[..., None] >> shifts) & 0xF, (lanes[..., None] >> (shifts + 16)) & 0xF  # [.., 32, 4]
    nibbles = (low | (high << 4)).to(torch.uint8).permute(0, 2, 1, 3).reshape(-1, codes.shape[1] * 4)
    groups = scales.shape[1]  # bf16 [N/32, K/G, 32, 2]
    sz = scales.permute(1, 0, 2, 3).reshape(groups, -1, 2)[:, :out_features]
    return nibbles[:out_features].contiguous(), sz.contiguous()
