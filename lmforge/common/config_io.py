"""Load and save for the frozen dataclass configs of runs (TrainConfig, SFTConfig, ...): dict, JSON and TOML,
with unknown fields refused by name, so a typo in a config file or a `--set` is an error, never ignored, and values
of the wrong type (`--set lr=abc`) refused by field and type, before validation compares them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Self

from lmforge.common.errors import ConfigError


class ConfigIO:
    """Mixin for frozen dataclasses: replace / to_dict / from_dict / from_toml / save."""

    def replace(self, **changes: Any) -> Self:
        check_fields(type(self), changes)
        check_types(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        check_fields(cls, data)
        check_types(cls, data)
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Self:
        """Fields from a TOML file (top-level keys, or keys inside any [table]), then `overrides` on top."""
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{cls.__name__} file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
        flat: dict = {}
        for key, value in raw.items():
            flat.update(value if isinstance(value, dict) else {key: value})
        return cls.from_dict({**flat, **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def check_fields(cls: type, data: dict) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")


def _accepts(annotation: Any, value: Any) -> bool | None:
    """Whether `value` fits the field type (None: a type this check does not know, left to the config)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(arg, value) for arg in args]
        return True if True in verdicts else None if None in verdicts else False
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (tuple, list) and len(args) in (1, 2) and args[-1] in (Ellipsis, *args[:1]):
        if not isinstance(value, (tuple, list)):
            return False
        verdicts = [_accepts(args[0], item) for item in value]
        return False if False in verdicts else None if None in verdicts else True
    return None


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "unset"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _type_name(annotation: Any) -> str:
    """`int | None` -> 'an integer or unset'; `tuple[str, ...]` -> 'a list of strings'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin in (tuple, list):
        return f"a list of {_PLURALS.get(args[0], 'values')}" if args else "a list"
    return _NAMES.get(annotation, str(annotation))


def check_types(cls: type, data: dict) -> None:
    """Refuse values whose type does not fit the field (an int for a float field is fine; a bool is not an int)."""
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name in hints and _accepts(hints[name], value) is False:
            raise ConfigError(f"{cls.__name__}.{name} must be {_type_name(hints[name])}, got {value!r}")
