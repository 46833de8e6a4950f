"""lmforge's int8 and int4 linears (csrc/linear_int8.cpp, csrc/linear_int4.cpp): the codes dequantized in registers,
so that a decode step streams one byte (int8) or half a byte (int4) per weight from memory, as llama.cpp's Q8_0 /
Q4_1 dot products do, instead of PyTorch's _weight_int8pack_mm / _weight_int4pack_mm_for_cpu.

lmforge.quant's Int8Linear / Int4Linear use them when the kernels are loaded already (`prepare_for_inference` loads
them) and the CPU has AVX2 and FMA; the packed layouts are built from the saved ones on first use (the saved format
does not change). The instruction set (AVX-512 with AVX512-BF16, else AVX2) is chosen at run time: `set_isa("avx2")`
forces the AVX2 path (tests), as does `ATEN_CPU_CAPABILITY=avx2`, the switch of the float kernels.
"""

import torch

from lmforge.kernels.cpu_kernels import loaded_ops

ISAS = ("avx512", "avx2", "default")
_usable: dict[int, bool] = {}  # id(ops) -> its quantized linears run here


def quant_linear_ops():
    """torch.ops.lmforge when it is loaded (never starts a build) and its int8 / int4 linears run on this CPU, else
    None."""
    ops = loaded_ops()
    if ops is None:
        return None
    key = id(ops)
    if key not in _usable:
        try:
            _usable[key] = ops.quant_linear_isa("") != "none"
        except (AttributeError, RuntimeError):  # a library built from older sources
            _usable[key] = False
    return ops if _usable[key] else None


def isa() -> str:
    """The instruction set the kernels run on: "avx512", "avx2" or "none" (also when the kernels are not loaded)."""
    ops = quant_linear_ops()
    return "none" if ops is None else ops.quant_linear_isa("")


def set_isa(name: str) -> str:
    """Run the kernels on `name` ("avx512", "avx2", or "default": the best this CPU and build have); returns it."""
    if name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}; valid: {', '.join(ISAS)}")
    ops = quant_linear_ops()
    if ops is None:
        raise RuntimeError("lmforge's quantized linear kernels are not loaded on this machine")
    return ops.quant_linear_isa(name)


def pack_int8(weight: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] codes -> the int8 kernel's [N/32, K, 32] layout."""
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
    """(x @ ((q - 8) * s + z).T + bias) for bf16 x [..., K], from `pack_int4`'s pair."""
    return torch.ops.lmforge.linear_int4.default(x, *packed, bias, out_features, float_out)
