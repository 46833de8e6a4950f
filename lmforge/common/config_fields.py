"""Knobs of the frozen config dataclasses, declared once: `setting(default, help)` is a field whose name, help and
default also make its CLI flag (lmforge/cli/options_from_config.py) and its TOML key; `section(Cls)` nests a group
of them (`cfg.optim.lr`, `[optim]` in TOML). `leaves(Cls)` lists every knob by its flat name (`lr`), the name flags,
`--set` and top-level TOML keys use; flat names are unique within a config, so they stay short and readable.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import MISSING, dataclass
from typing import Any


def setting(default: Any = MISSING, help: str = "", *, flag: str | tuple[str, ...] | None = None,
            short: str | None = None, negative: str | None = None) -> Any:
    """A config field with its help. flag: the long flag name(s) when not --field-name; short: e.g. "-b";
    negative: a bool's off switch when not --no-field-name. No default: the field is required."""
    flags = (flag,) if isinstance(flag, str) else tuple(flag or ())
    return dataclasses.field(default=default, metadata={"help": help, "flags": flags, "short": short,
                                                         "negative": negative})


def section(cls: type, help: str = "", **defaults: Any) -> Any:
    """A nested section of a config (its own frozen, validated dataclass), with this config's defaults for it."""
    return dataclasses.field(default_factory=functools.partial(cls, **defaults), metadata={"help": help})


@dataclass(frozen=True)
class Leaf:
    """One knob: flat name, path in the nested config, type, default (MISSING: required), help and flag names."""

    name: str
    path: tuple[str, ...]
    hint: Any
    default: Any
    help: str
    flags: tuple[str, ...]
    negative: str | None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def where(self) -> str:
        """How a TOML file spells it: `lr` in [optim] -> 'optim.lr'."""
        return ".".join(self.path)


def sections(cls: type) -> dict[str, type]:
    """The nested sections of a config class: field name -> section class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


@functools.cache
def leaves(cls: type) -> dict[str, Leaf]:
    """Every knob of a config class (sections included) by flat name; a flat name used twice is a bug in the class."""
    return _leaves(cls, (), None)


def _leaves(cls: type, prefix: tuple[str, ...], defaults: Any) -> dict[str, Leaf]:
    hints, out = typing.get_type_hints(cls), {}
    subs = sections(cls)
    for f in dataclasses.fields(cls):
        if f.name in subs:
            factory = f.default_factory
            sub_defaults = getattr(defaults, f.name) if defaults is not None else factory() if factory is not MISSING \
                else None
            found = _leaves(subs[f.name], (*prefix, f.name), sub_defaults)
        else:
            default = getattr(defaults, f.name) if defaults is not None else f.default
            if default is MISSING and f.default_factory is not MISSING:
                default = f.default_factory()
            meta = f.metadata
            flags = meta.get("flags") or ("--" + f.name.replace("_", "-"),)
            flags = (*flags, meta["short"]) if meta.get("short") else flags
            found = {f.name: Leaf(f.name, (*prefix, f.name), hints[f.name], default, meta.get("help", ""), flags,
                                  meta.get("negative"))}
        clash = set(found) & set(out)
        if clash:
            raise TypeError(f"{cls.__name__}: flat name(s) {', '.join(sorted(clash))} used twice")
        out.update(found)
    return out
