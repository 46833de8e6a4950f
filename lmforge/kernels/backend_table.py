"""The one table that picks the backend of an inference linear: `select_backend(dtype, capability, shape)`.

Three backends compute y = x W^T: lmforge's C++ kernels (csrc/linear_bf16.cpp by the AVX512-BF16 dot product,
csrc/linear_f32.cpp by FMA at AVX-512 width), oneDNN with the weight packed once (onednn.py), and torch's F.linear.
The capability is a value (`Capability`), detected once from torch's API (common/hardware.py) and the kernels'
build state, or built by hand in tests, so that every CPU level is checked on any machine. Chosen by measurement:
- bf16, AVX512-BF16 without AMX (Zen 4/5): the kernel at every size. 2-core Zen 5, SmolLM2-135M's 30 layers:
  4.6 vs 6.7 ms at 1 row, 6.6 vs 9.0 at 18 rows, 62 vs 63 at 2048 (oneDNN packed); `benchmarks/throughput.py`
  5.45x transformers at 44% of the bf16 peak.
- bf16, AMX: a call of more than DECODE_ROWS rows (a prompt) goes to oneDNN, which runs it on AMX tiles; the kernel
  there gave `benchmarks/throughput.py` 1.85x transformers at 5.8% of the 2.05 TFLOP/s peak. Decode-sized calls
  keep the kernel, which streams weights faster than oneDNN where a step is bound by memory (figures above).
- bf16 without native bf16 instructions: oneDNN packed (2.2-2.7x F.linear at 1-32 rows on an Intel AMX CPU).
- fp32 at AVX-512 width: the kernel (Zen 5: 1.4x oneDNN's at 1 row, 1.9x at 18, 1.3x at 2048); below it (at AVX2
  width it measured slower than oneDNN for prompts) oneDNN packed on AMD (MKL's F.linear 1.35x slower over a
  Zen 4 decode), F.linear on Intel (packed measured slower at one row there).
"""

from dataclasses import dataclass, replace
from enum import StrEnum

import torch

DECODE_ROWS = 32  # up to this many rows a call is decode-sized: weights stream from memory, arithmetic waits
BF16_LEVELS = ("AVX-512-BF16", "AMX")
LEVELS = ("no AVX-512", "AVX-512", *BF16_LEVELS)


class Backend(StrEnum):
    KERNEL = "lmforge kernel"
    ONEDNN = "oneDNN packed"
    F_LINEAR = "torch F.linear"


@dataclass(frozen=True)
class Capability:
    """What the choice depends on. level: one of LEVELS (the instructions lmforge's kernels can use here);
    kernels: lmforge's linear kernels run (built, or buildable when nothing is built yet); onednn_bf16 / onednn_f32:
    this torch can pack such weights for oneDNN; vendor: the x86 vendor string."""

    level: str
    kernels: bool = True
    onednn_bf16: bool = True
    onednn_f32: bool = True
    vendor: str = ""

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"Capability.level must be one of {LEVELS}, got {self.level!r}")

    def without_kernels(self) -> "Capability":
        return replace(self, kernels=False)


def select_backend(dtype: torch.dtype, capability: Capability, shape: tuple[int, int]) -> Backend:
    """The backend for y = x W^T with x of `shape` (rows, in_features) in `dtype` (see the module docstring)."""
    rows, in_features = shape
    cap = capability
    if dtype == torch.bfloat16:
        if cap.level == "AMX" and rows > DECODE_ROWS and cap.onednn_bf16:
            return Backend.ONEDNN  # AMX tiles
        if cap.kernels and cap.level in BF16_LEVELS and in_features % 2 == 0:  # the kernel reads pairs of inputs
            return Backend.KERNEL
        return Backend.ONEDNN if cap.onednn_bf16 else Backend.F_LINEAR
    if dtype == torch.float32:
        if cap.kernels and cap.level != "no AVX-512":
            return Backend.KERNEL
        return Backend.ONEDNN if cap.onednn_f32 and cap.vendor == "AuthenticAMD" else Backend.F_LINEAR
    return Backend.F_LINEAR


def linear_plan(dtype: torch.dtype, capability: Capability, in_features: int) -> tuple[Backend, Backend]:
    """(backend of decode-sized calls, backend of prompt-sized calls): the table changes only at DECODE_ROWS."""
    return (select_backend(dtype, capability, (1, in_features)),
            select_backend(dtype, capability, (DECODE_ROWS + 1, in_features)))


def describe(dtype: torch.dtype, capability: Capability, in_features: int = 64) -> str:
    """One line for `lmforge info`: the backend of a `dtype` projection, by call size where that matters."""
    decode, prompt = linear_plan(dtype, capability, in_features)
    if decode == prompt:
        return decode.value
    return f"{decode.value} up to {DECODE_ROWS} rows, {prompt.value} above"


def cpu_level(flags: frozenset[str], vector_width: str) -> str:
    """The level of a CPU with these /proc/cpuinfo-spelled flags, lmforge's kernels built at ATen's `vector_width`."""
    if vector_width != "AVX512":
        return "no AVX-512"
    return "AMX" if "amx_bf16" in flags else "AVX-512-BF16" if "avx512_bf16" in flags else "AVX-512"


def detect_capability(kernels: bool = True, build: bool = True, state=None) -> Capability:
    """This machine's capability. kernels=False: as if lmforge's kernels were absent. build=False never compiles
    (`lmforge info`): kernels not built yet count as available, a failed or disabled build as absent; `state`: the
    kernels' KernelState (build_state.kernel_state() by default). A build whose bf16 kernel fails its self-test (a
    compiler without the instructions) counts as level AVX-512."""
    from lmforge.common.hardware import cpu_flags, cpu_vendor
    from lmforge.kernels import cpu_kernels, onednn
    from lmforge.kernels.build_state import kernel_state, vector_width

    level = cpu_level(cpu_flags(), vector_width())
    runs = False
    if kernels and level != "no AVX-512":
        status = (kernel_state() if state is None else state).status
        if build or status == "built":
            runs = cpu_kernels.cpu_ops() is not None
            if runs and level in BF16_LEVELS and cpu_kernels.bf16_linear_ops() is None:
                level = "AVX-512"
        else:
            runs = status == "not built"
    return Capability(level, kernels=runs, onednn_bf16=onednn.packing_available(torch.bfloat16),
                      onednn_f32=onednn.packing_available(torch.float32), vendor=cpu_vendor())
