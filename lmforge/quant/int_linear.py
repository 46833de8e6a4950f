"""Weight-only quantization with PyTorch's own CPU kernels (the gpt-fast recipe): int8 and group-wise int4.

int8: symmetric, one scale per output channel, w ~ q * s with q in [-127, 127] -> aten._weight_int8pack_mm.
int4: asymmetric, one (scale, zero) per group of `group_size` input channels, w ~ (q - 8) * s + z with q in [0, 15]
and z the group's mid-point (the "tinygemm" convention) -> aten._weight_int4pack_mm_for_cpu.
Both kernels are fast only with bfloat16 activations (the fp32 paths are scalar reference loops, ~10x slower),
so quantized layers compute in bf16 and return the caller's dtype. As an LM head (`float_logits`) they return
float32 sums unrounded: logits rounded to bf16 tie tokens (transformer.float32_logits). Where lmforge's C++ kernels
are loaded, the layers run on its own int8 / int4 linears instead (lmforge/kernels/quant_linear.py: codes dequantized
in registers, packed from the saved layout on first use), which stream the codes at the memory's speed; the packed
layout is then their only copy of the weights (quant/int_kernels.py). With AVX512-VNNI they also quantize their inputs
to int8 per block of 32 (int8 x int8 dot products, as llama.cpp; LMFORGE_INT8_ACTIVATIONS=0: weight-only).
"""

import fnmatch

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.kernels.cpu_kernels import bf16_linear_ops, loaded_ops
from lmforge.kernels.quant_linear import (
    int4_linear,
    int8_linear,
    pack_int4,
    pack_int8,
    quant_linear_ops,
    unpack_int4,
    unpack_int8,
)
from lmforge.quant.group_grid import quantize_groups
from lmforge.quant.int_codes import (
    GROUP_SIZES,
    KERNEL_DTYPE,
    dequantize_int4,
    dequantize_int8,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    to_kernel_scales_and_zeros,
    unpack_nibbles,
)
from lmforge.quant.int_kernels import KernelPacked
from lmforge.quant.quant_config import BITS, METHODS, QuantConfig  # noqa: F401  (BITS, METHODS: re-exported)


# -------------------------------------------------------------------------------------------------------- modules
class Int8Linear(KernelPacked):
    """y = x @ (q * s).T (+ bias): int8 weights [out, in], bf16 per-channel scales [out]."""

    SAVED = {"weight": 0, "scales": 0}
    kernel_linear = staticmethod(int8_linear)

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=KERNEL_DTYPE))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.codes_bf16 = None  # the codes packed for lmforge's bf16 kernel, built by the first float_logits
        self._init_kernel_storage()  # (codes, float32 scales) for lmforge's int8 kernel, built on first use

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        q, scales = quantize_int8(linear.weight)
        module.weight.copy_(q)
        module.scales.copy_(scales.to(KERNEL_DTYPE))
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return module

    def dequantize(self) -> torch.Tensor:
        return dequantize_int8(self.weight, self.scales)

    def _pack_saved(self) -> tuple[torch.Tensor, torch.Tensor]:
        return pack_int8(self.weight), self.scales.float().contiguous()

    def _unpack(self, pack: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        codes, scales = pack
        return {"weight": unpack_int8(codes, self.out_features, self.in_features),
                "scales": scales[:self.out_features].to(KERNEL_DTYPE)}

    def _like(self, out_features: int) -> "Int8Linear":
        return Int8Linear(self.in_features, out_features, bias=self.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._kernel_forward(x)
        if y is not None:
            return y
        flat = x.reshape(-1, self.in_features).to(self.scales.dtype)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def float_logits(self, x: torch.Tensor) -> torch.Tensor:
        """forward's sums (bf16 activations x int8 codes, times the scales) as float32, not rounded to bf16. With
        lmforge's bf16 kernel loaded, the codes (exact in bf16) go through it and the scales apply in float32 (SmolLM2's
        head, 1 row, 2 Zen 5 cores: 0.78 ms vs 0.56 for the int8 kernel's bf16 output); else the int8 kernel's
        float32 path (the same sums; ~10x slower)."""
        flat = x.reshape(-1, self.in_features).to(KERNEL_DTYPE)
        ops = _bf16_kernel() if flat.device.type == "cpu" and self.in_features % 2 == 0 else None
        pack = self._kernel_pack(x)
        if pack is not None:
            y = int8_linear(flat, pack, None, self.out_features, float_out=True)
        elif ops is not None:
            if self.codes_bf16 is None:
                self.codes_bf16 = ops.pack_linear_bf16(self.weight.to(KERNEL_DTYPE))
            y = ops.linear_bf16_float(flat, self.codes_bf16, None, self.out_features) * self.scales.float()
        else:
            y = torch.ops.aten._weight_int8pack_mm(flat.float(), self.weight, self.scales.float())
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.float()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.codes_bf16 = None

    def weight_bytes(self) -> int:
        """Bytes one call reads: codes and scales in the layout of the kernel that runs (a block of 32 outputs)."""
        N, K = self.out_features, self.in_features
        kernel = quant_linear_ops() is not None and self.storage_device().type == "cpu"
        codes = -(-N // 32) * 32 * K + 4 * N if kernel else N * K + 2 * N
        return codes + (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits=8"


class Int4Linear(KernelPacked):
    """y = x @ ((q - 8) * s + z).T (+ bias), one (s, z) per group of input channels.

    State (what is saved): `weight` uint8 [out, in/2] (two codes per byte, see pack_nibbles) and
    `scales_and_zeros` bf16 [in/G, out, 2]. The kernels' own layouts (PyTorch's tiled one depends on the CPU's vector
    width) are built from the portable one on first use, not saved: `packed` (PyTorch's) or `kernel_pack`
    (lmforge's, where it runs; then the only copy: quant/int_kernels.py).
    """

    SAVED = {"weight": 0, "scales_and_zeros": 1}
    kernel_linear = staticmethod(int4_linear)

    def __init__(self, in_features: int, out_features: int, group_size: int = 32, bias: bool = False):
        super().__init__()
        if in_features % group_size:
            raise LmforgeError(f"int4 group_size {group_size} does not divide in_features {in_features}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.zeros(in_features // group_size, out_features, 2,
                                                             dtype=KERNEL_DTYPE))
        self.register_buffer("packed", None, persistent=False)
        self._init_kernel_storage()
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> "Int4Linear":
        module = cls(linear.in_features, linear.out_features, group_size, bias=linear.bias is not None)
        q, scales, zeros = quantize_int4(linear.weight, group_size)
        module.weight.copy_(pack_nibbles(q))
        module.scales_and_zeros.copy_(to_kernel_scales_and_zeros(scales, zeros))
        if linear.bias is not None:
            module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        module.repack()
        return module

    @classmethod
    def from_codes(cls, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                   bias: torch.Tensor | None = None) -> "Int4Linear":
        """A layer holding given codes [N, K] in [0, 15] and per-group scales / zeros [N, K/G] (AWQ, GPTQ, int3)."""
        N, K = q.shape
        module = cls(K, N, group_size, bias=bias is not None)
        module.weight.copy_(pack_nibbles(q.to(torch.uint8)))
        module.scales_and_zeros.copy_(to_kernel_scales_and_zeros(scales, zeros))
        if bias is not None:
            module.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        module.repack()
        return module

    def repack(self) -> None:
        """Forget the kernels' layouts (after the codes changed): rebuilt from the portable codes on next use."""
        if self.is_packed():
            self._restore_saved()
        self.packed = None

    @torch.no_grad()
    def _aten_packed(self) -> torch.Tensor:
        if self.packed is None:
            codes = unpack_nibbles(self.weight).to(torch.int32)
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        return self.packed

    def _pack_saved(self) -> tuple[torch.Tensor, torch.Tensor]:
        return pack_int4(self.weight, self.scales_and_zeros)

    def _unpack(self, pack: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(self.SAVED, unpack_int4(pack, self.out_features), strict=True))

    def _like(self, out_features: int) -> "Int4Linear":
        return Int4Linear(self.in_features, out_features, self.group_size, bias=self.bias is not None)

    def weight_bytes(self) -> int:
        """Bytes one call reads: codes, scales and zeros in the layout of the kernel that runs."""
        N, K, groups = self.out_features, self.in_features, self.in_features // self.group_size
        rows = -(-N // 32) * 32 if quant_linear_ops() is not None and self.storage_device().type == "cpu" else N
        return rows * (K // 2 + groups * 4) + (0 if self.bias is None else self.bias.nbytes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.repack()

    def dequantize(self) -> torch.Tensor:
        sz = self.scales_and_zeros.transpose(0, 1)  # [out, in/G, 2]
        return dequantize_int4(unpack_nibbles(self.weight), sz[..., 0], sz[..., 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._kernel_forward(x)
        if y is not None:
            return y
        flat = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self._aten_packed(), self.group_size,
                                                        self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def float_logits(self, x: torch.Tensor) -> torch.Tensor:
        """forward's result from float32 sums, as float32: lmforge's int4 kernel where it runs, else PyTorch's int4
        kernel's float32 path (bf16 activations as forward sees them; exact, ~50x slower than its bf16 output, so
        int8 is the default head width)."""
        pack = self._kernel_pack(x)
        if pack is not None:
            y = int4_linear(x.reshape(-1, self.in_features).to(KERNEL_DTYPE), pack, None, self.out_features, True)
        else:
            flat = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).float()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self._aten_packed(), self.group_size,
                                                            self.scales_and_zeros.float())
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.float()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits=4, group_size={self.group_size}"


def _bf16_kernel():
    """lmforge's bf16 linear kernel when the kernels are loaded already (prepare_for_inference loads them) and run on
    this CPU; never starts a build."""
    return bf16_linear_ops() if loaded_ops() is not None else None


# ---------------------------------------------------------------------------------------------------------- model
def check_group_size(model: nn.Module, cfg: QuantConfig) -> None:
    """Fail before changing anything when an int4 layer's input size is not a multiple of the group size."""
    for name, linear in quantizable_linears(model, cfg.skip):
        if cfg.bits_for(name) in (3, 4) and linear.in_features % cfg.group_size:
            allowed = [g for g in GROUP_SIZES if linear.in_features % g == 0]
            raise LmforgeError(f"int{cfg.bits_for(name)} group_size {cfg.group_size} does not divide in_features "
                               f"{linear.in_features} of {name}; use one of {allowed}")


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in skip)


def quantizable_linears(model: nn.Module, skip: tuple[str, ...] = ()) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear and not is_skipped(name, skip)]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantized_linear(linear: nn.Linear, bits: int, group_size: int) -> nn.Module:
    if bits == 3:  # the int4 layer with codes 0..7
        return Int4Linear.from_codes(*quantize_groups(linear.weight, 3, group_size), group_size, linear.bias)
    return Int8Linear.from_linear(linear) if bits == 8 else Int4Linear.from_linear(linear, group_size)


def empty_quantized_linear(linear: nn.Linear, cfg: QuantConfig, name: str) -> nn.Module:
    bias = linear.bias is not None
    if cfg.bits_for(name) == 8:
        return Int8Linear(linear.in_features, linear.out_features, bias=bias)
    return Int4Linear(linear.in_features, linear.out_features, cfg.group_size, bias=bias)


@torch.no_grad()
def quantize_model(model: nn.Module, bits: int = 8, group_size: int = 32, skip: tuple[str, ...] = (),
                   head_bits: int = 8) -> nn.Module:
    """Replace every nn.Linear (except names matching a `skip` pattern) by Int8Linear / Int4Linear, in place.

    lm_head gets `head_bits` (int8 by default, see QuantConfig). A tied lm_head that gets quantized stops sharing
    memory with the embedding: the embedding keeps its float table (a lookup reads one row per token, so its size
    does not cost decode time, only memory).
    """
    cfg = QuantConfig(bits=bits, group_size=group_size, skip=tuple(skip), head_bits=head_bits)
    check_group_size(model, cfg)
    for name, linear in quantizable_linears(model, cfg.skip):
        quantized = quantized_linear(linear, cfg.bits_for(name), group_size)
        set_submodule(model, name, quantized.to(linear.weight.device))
    model.quant_config = cfg
    return model
