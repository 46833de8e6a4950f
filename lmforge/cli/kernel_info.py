"""What `lmforge info` says about the CPU kernels and the linear backend each dtype gets, found without building.

The backends come from the table `prepare_for_inference` uses (lmforge/kernels/backend_table.py), fed with this
machine's capability as it stands (kernels not built yet count as available; tests/unit/test_kernel_build.py checks
the line against what prepare_for_inference installs).
"""

import torch

from lmforge.common.hardware import cpu_summary
from lmforge.kernels.backend_table import Backend, Capability, describe, detect_capability
from lmforge.kernels.build_state import KernelState, kernel_state

ONEDNN = Backend.ONEDNN.value
F_LINEAR = Backend.F_LINEAR.value


def _why(dtype: torch.dtype, cap: Capability, state: KernelState) -> str:
    """Why lmforge's kernel does or does not take `dtype` projections here."""
    needs = "AVX512-BF16" if dtype == torch.bfloat16 else "AVX-512"
    fits = cap.level in ("AVX-512-BF16", "AMX") if dtype == torch.bfloat16 else cap.level != "no AVX-512"
    if not fits:
        return f"lmforge's kernel needs {needs}; CPU level {cap.level}"
    if not cap.kernels:
        return f"lmforge kernels: {state.status}"
    amx = "; prompts on oneDNN's AMX tiles" if dtype == torch.bfloat16 and cap.level == "AMX" else ""
    return (f"{needs}, once built" if state.status == "not built" else needs) + amx


def linear_backends(state: KernelState | None = None) -> dict[str, str]:
    """{"bfloat16": ..., "float32": ...}: the backend of a model's CPU projections after prepare_for_inference."""
    state = kernel_state() if state is None else state
    cap = detect_capability(build=False, state=state)
    return {str(dtype).removeprefix("torch."): f"{describe(dtype, cap)} ({_why(dtype, cap, state)})"
            for dtype in (torch.bfloat16, torch.float32)}


def kernel_facts() -> dict:
    state = kernel_state()
    return {"cpu": cpu_summary(),
            "kernels": {"state": state.status, "detail": state.describe(),
                        "path": str(state.directory) if state.directory else None},
            "linear": linear_backends(state)}
