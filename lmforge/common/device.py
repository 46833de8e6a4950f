"""The one device resolution of every command: `auto` (CUDA when torch sees a GPU, else the CPU), `cpu`, `cuda` or
`cuda:N`. Anything else, or CUDA without a GPU, is a one-line user error. The name check is torch-free (configs and
the CLI check it before torch loads); `resolve_device` imports torch on first use and runs once per command, never
in a hot loop.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lmforge.common.errors import LmforgeError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (cuda when a GPU is visible, else cpu) | cpu | cuda | cuda:N."
_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: object, what: str = "--device") -> str:
    """`name` when it is auto, cpu, cuda or cuda:N; else LmforgeError naming it (torch-free)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LmforgeError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    return name


def resolve_device(name: str, what: str = "--device") -> torch.device:
    """The torch.device `name` stands for on this machine; CUDA asked for but absent (or an index past the GPUs
    torch sees) is an LmforgeError, before any model is loaded."""
    import torch

    check_device_name(name, what)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LmforgeError(f"{what} {name}: torch sees no CUDA device here (torch.cuda.is_available() is False; "
                           f"torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise LmforgeError(f"{what} {name}: only {count} CUDA device(s) visible (cuda:0 .. cuda:{count - 1})")
    return device
