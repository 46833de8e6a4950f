"""Load and save for the frozen dataclass configs of runs (TrainConfig, SFTConfig, ...): dict, JSON and TOML.
Keys are flat knob names (`lr`) or section tables (`[optim] lr`, config_fields.py), unknown ones refused by name, so
a typo in a config file or a `--set` is an error, never ignored; values of the wrong type (`--set lr=abc`) are
refused by field and type before each section's validation compares them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Self

from lmforge.common.config_fields import Leaf, leaves, sections
from lmforge.common.errors import ConfigError


class ConfigIO:
    """Mixin for frozen dataclasses: replace / to_dict / from_dict / from_toml / save (see the functions below)."""

    def replace(self, **changes: Any) -> Self:
        return replace_config(self, changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        return config_from_dict(cls, data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Self:
        """Fields from a TOML file ([section] tables or flat top-level keys), then `overrides` (flat names) on top."""
        return config_from_dict(cls, merge(nest(cls, read_toml(path)), nest(cls, overrides)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def read_toml(path: str | Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def nest(cls: type, data: dict, where: str = "") -> dict:
    """Flat names (`lr`) and section tables (`optim = {lr = ...}`) -> one dict nested like the config; a key that
    is neither is an error naming it (a typo in a file or a --set is never ignored)."""
    subs, flat, out, unknown = sections(cls), leaves(cls), {}, []
    for key, value in data.items():
        if key in subs and isinstance(value, subs[key]):
            value = dataclasses.asdict(value)  # a section object: taken field by field, validated again
        if key in subs and isinstance(value, dict):
            out = merge(out, {key: nest(subs[key], value, f"{where}{key}.")})
        elif key in flat and (where == "" or flat[key].path == (key,)):
            out = merge(out, _at(flat[key].path, value))
        else:
            unknown.append(f"{where}{key}")
    if unknown:
        allowed = [f"{where}{name}" for name in (flat if where == "" else (f.name for f in dataclasses.fields(cls)))]
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}; allowed: "
                          f"{', '.join(sorted(allowed))}")
    return out


def _at(path: tuple[str, ...], value: Any) -> dict:
    return {path[0]: value} if len(path) == 1 else {path[0]: _at(path[1:], value)}


def merge(base: dict, top: dict) -> dict:
    """`top` over `base`, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def missing(cls: type, nested: dict) -> list[Leaf]:
    """The required knobs a nested dict does not give."""
    def given(path: tuple[str, ...]) -> bool:
        node = nested
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True
    return [leaf for leaf in leaves(cls).values() if leaf.required and not given(leaf.path)]


def check_types(cls: type, nested: dict) -> None:
    """Refuse values whose type does not fit the field (an int for a float field is fine; a bool is not an int)."""
    for leaf in leaves(cls).values():
        node: Any = nested
        for key in leaf.path:
            node = node.get(key, MISSING) if isinstance(node, dict) else MISSING
        if node is not MISSING and _accepts(leaf.hint, node) is False:
            raise ConfigError(f"{cls.__name__}.{leaf.name} must be {_type_name(leaf.hint)}, got {node!r}")


def _build(cls: type, nested: dict, base: Any) -> Any:
    """The config from a nested dict, on top of `base` (an instance) or of the class defaults; every section and the
    config itself validate in their __post_init__."""
    kwargs = dict(nested)
    for name, sub in sections(cls).items():
        if name in kwargs:
            current = getattr(base, name) if base is not None else _field(cls, name).default_factory()
            kwargs[name] = _build(sub, kwargs[name], current)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    lacking = missing(cls, nested)
    if lacking:
        raise ConfigError(f"{cls.__name__}.{lacking[0].name} is required")
    return cls(**kwargs)


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def config_from_dict(cls: type, data: dict) -> Any:
    """A config of class `cls` from flat names and/or section dicts (as `to_dict` writes them)."""
    nested = nest(cls, data)
    check_types(cls, nested)
    return _build(cls, nested, None)


def replace_config(config: Any, changes: dict) -> Any:
    """A copy of `config` with `changes` (flat names or section dicts), validated again."""
    nested = nest(type(config), changes)
    check_types(type(config), nested)
    return _build(type(config), nested, config)


def flat_dict(config: Any) -> dict:
    """Every knob of a config by flat name (`{"lr": ..., "max_steps": ...}`), sections flattened."""
    out = {}
    for name, leaf in leaves(type(config)).items():
        value = config
        for key in leaf.path:
            value = getattr(value, key)
        out[name] = value
    return out


def check_fields(cls: type, data: dict) -> None:
    """Every key of `data` names a knob of `cls` (flat name or section)."""
    nest(cls, data)


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
