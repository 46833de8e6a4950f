"""What `lmforge info` says about the CPU kernels and the linear backend each dtype gets, found without building.

The backend choice mirrors `lmforge.model.inference.prepare_for_inference` (and tests/unit/test_kernel_build.py checks
it against what that function installs): bf16 projections run on lmforge's AVX512-BF16 kernel where it is built
and the CPU has the instruction, float32 ones on its FMA kernel in an AVX-512 build; the others are packed for
oneDNN (`packed_linear.default_packed_dtypes`: bf16 everywhere, float32 on AMD) or stay torch's F.linear.
"""

import torch

from lmforge.common.hardware import cpu_flags, cpu_summary
from lmforge.kernels import cpu_kernels
from lmforge.kernels.build_state import KernelState, kernel_state, vector_width
from lmforge.model.packed_linear import default_packed_dtypes, packing_available

ONEDNN = "oneDNN packed"
F_LINEAR = "torch F.linear"


def _kernel_plan(state: KernelState, dtype: torch.dtype) -> tuple[bool, str]:
    """(whether lmforge's linear kernel takes `dtype`, why not / which instructions)."""
    if dtype == torch.bfloat16:
        fits, needs = "avx512_bf16" in cpu_flags(), "AVX512-BF16"
    else:
        fits, needs = vector_width() == "AVX512", "AVX-512"
    if not fits:
        return False, f"lmforge's kernel needs {needs}"
    if state.status == "built":
        ops = cpu_kernels.bf16_linear_ops() if dtype == torch.bfloat16 else cpu_kernels.f32_linear_ops()
        return ops is not None, needs if ops is not None else f"the built kernel failed its {needs} self-test"
    if state.status == "not built":
        return True, f"{needs}, once built"
    return False, f"lmforge kernels: {state.status}"


def linear_backends(state: KernelState | None = None) -> dict[str, str]:
    """{"bfloat16": ..., "float32": ...}: the backend of a model's CPU projections after prepare_for_inference."""
    state = kernel_state() if state is None else state
    backends = {}
    for dtype in (torch.bfloat16, torch.float32):
        kernel, why = _kernel_plan(state, dtype)
        if kernel:
            backends[str(dtype).removeprefix("torch.")] = f"lmforge kernel ({why})"
            continue
        packed = dtype in default_packed_dtypes() and packing_available(dtype)
        backends[str(dtype).removeprefix("torch.")] = f"{ONEDNN if packed else F_LINEAR} ({why})"
    return backends


def kernel_facts() -> dict:
    state = kernel_state()
    return {"cpu": cpu_summary(),
            "kernels": {"state": state.status, "detail": state.describe(),
                        "path": str(state.directory) if state.directory else None},
            "linear": linear_backends(state)}
