"""Device and precision choice for training: 'auto' picks CUDA when present, and bf16 where the hardware computes
bf16 natively (a bf16-capable GPU, or a CPU with AMX / AVX512-BF16), else fp32. bf16 means bf16 weights with fp32
masters (master_weights.py) in one process when every weight trains; autocast over fp32 weights otherwise. fp16 is
autocast with dynamic loss scaling (torch.amp.GradScaler, Micikevicius et al. 2018 "Mixed Precision Training"): on
CUDA, or on a CPU (emulated, slow: for checks), in one process or DDP.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.common.device import resolve_device as common_resolve_device
from lmforge.common.errors import LmforgeError
from lmforge.common.hardware import cpu_has_native_bf16
from lmforge.train.master_weights import trains_every_weight

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The training device (lmforge.common.device: auto | cpu | cuda | cuda:N; CUDA without a GPU is refused)."""
    return common_resolve_device(name, "device")


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' when the device computes it natively, else 'fp32'; other names unchanged."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def grad_scaler(precision: str, device: torch.device, layout: str) -> torch.amp.GradScaler | None:
    """fp16's loss scaler on `device`, None for other precisions. `layout`: the parallel mode ('none', 'ddp',
    'fsdp', or 'layered' for TP / PP meshes). Sharded gradients (FSDP2, TP, PP) are refused: each rank would see only
    its shard's overflow and skip a different step; bf16 needs no scaling there."""
    if precision != "fp16":
        return None
    if layout not in ("none", "ddp"):
        raise LmforgeError(f"precision='fp16' with parallel={layout!r}: the loss scaler would skip steps per shard; "
                           "use precision='bf16' (no loss scaling), or parallel none / ddp")
    return torch.amp.GradScaler(device.type)


def uses_master_weights(precision: str, distributed: bool, model: nn.Module) -> bool:
    """bf16 in one process on a model whose every weight trains: bf16 weights + fp32 masters. fp16 (loss scaling),
    DDP / FSDP2 (their own gradient reduction) and a frozen base (PEFT) keep autocast over fp32 weights."""
    return precision == "bf16" and not distributed and trains_every_weight(model)
