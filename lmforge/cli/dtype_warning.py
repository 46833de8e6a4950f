"""A one-line warning when a command is asked to compute in bf16 on a CPU that only emulates it."""

import typer

from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note

BF16_NAMES = ("bfloat16", "bf16")


def warn_if_slow_dtype(dtype: str, device: str = "cpu") -> None:
    """Print a warning to stderr when `dtype` is bf16, the device a CPU, and the CPU has no native bf16."""
    if str(dtype).lower() in BF16_NAMES and device == "cpu" and not cpu_has_native_bf16():
        typer.echo(f"warning: --dtype {dtype}: {slow_bf16_note()}; --dtype float32 is faster here", err=True)
