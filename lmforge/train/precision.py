"""Device and precision choice for training: 'auto' picks CUDA when present, and bf16 autocast where the hardware
computes bf16 natively (a bf16-capable GPU, or a CPU with AMX / AVX512-BF16), else fp32.
"""

from __future__ import annotations

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.hardware import cpu_has_native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LmforgeError("device='cuda' but no CUDA device is available; use device='cpu' or 'auto'")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' when the device computes it natively, else 'fp32'; other names unchanged."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"
