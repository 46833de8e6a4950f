"""The `--device` flag of the inference commands (generate, chat, serve, bench, eval) and moving a loaded model
there: resolved once per command (lmforge.common.device), before the weights load, so `--device cuda` on a machine
without a GPU is a one-line error at once. Tokenization stays on the CPU; the model, its KV caches and the sampler
live on the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lmforge.cli.dtype_warning import warn_if_slow_dtype
from lmforge.common.device import DEVICE_HELP, resolve_device

if TYPE_CHECKING:
    import torch

DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)


def pick_device(name: str, dtype: str | None = None) -> torch.device:
    """The device `--device NAME` stands for (torch loads here); warns when `dtype` is bf16 on a CPU without it."""
    device = resolve_device(name)
    if dtype is not None:
        warn_if_slow_dtype(dtype, device.type)
    return device


def place(lm, device: torch.device):
    """Move a loaded LM's model (with a LLaVA's vision tower, and its MTP heads when it has any) to `device`, in
    place; returns `lm`."""
    lm.model.to(device)
    if getattr(lm, "vision", None) is not None:
        lm.vision.to(device)
    mtp = getattr(lm, "mtp", None)
    if mtp is not None and hasattr(mtp, "to"):
        mtp.to(device)
    return lm
