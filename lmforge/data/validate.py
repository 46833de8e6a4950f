"""Small validation helpers for the frozen config dataclasses of the data steps.

Each raises `ConfigError` naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

from lmforge.common.errors import ConfigError


def in_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}={value!r} must be a number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"{name}={value!r} is out of range; allowed: {bounds}")


def one_of(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; use one of {allowed}")


def ordered(name_lo: str, lo: float, name_hi: str, hi: float) -> None:
    if lo > hi:
        raise ConfigError(f"{name_lo}={lo!r} must not exceed {name_hi}={hi!r}")
