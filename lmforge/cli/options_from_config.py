"""Typer commands generated from a config dataclass, so a knob is declared once, in its config: every field (in
sections too) becomes a flag with the field's help and default, plus `--config FILE.toml` and `--set FIELD=VALUE`.

Flags stay flat (`--lr`, not `--optim.lr`): flat names are unique per config, short to type, and `--help` reads as
one list; a TOML file groups them by section (`[optim] lr = ...`) or names them flat. Precedence: the config's
defaults < the TOML file < the flags < `--set`. The generated function carries an inspect.Signature of
`typer.Option`s, which typer reads like a hand-written one (https://typer.tiangolo.com/tutorial/options/).
"""

from __future__ import annotations

import inspect
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lmforge.common.config_fields import Leaf, leaves, sections
from lmforge.common.config_io import check_types, config_from_dict, merge, missing, nest, read_toml
from lmforge.common.errors import ConfigError

# flags of every generated command that are not fields of its config
COMMAND_FLAGS = {"config": ("--config", "-c"), "set_": ("--set",)}


def config_command(cls: type, run: Callable[[Any], None], doc: str, name: str) -> Callable[..., None]:
    """A typer command function whose flags are the knobs of `cls`; it builds the config and calls run(config)."""
    knobs = leaves(cls)
    clash = set(knobs) & set(COMMAND_FLAGS)
    if clash:
        raise TypeError(f"{cls.__name__}: field(s) {', '.join(clash)} clash with the command's own flags")

    def command(**values: Any) -> None:
        config_file, assignments = values.pop("config"), values.pop("set_")
        flags = {key: _from_flag(knobs[key], value) for key, value in values.items() if value not in (None, [])}
        flags.update(parse_assignment(cls, text) for text in assignments or ())
        config = load_config(cls, config_file, flags)
        if "device" in knobs:  # --device cuda without a GPU: one line now, not after the model has loaded
            check_device_available(config, knobs["device"].path)
        run(config)

    params = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, *COMMAND_FLAGS["config"], help="TOML file of these settings ([section] tables or flat keys); "
            "flags win.", show_default=False)),
        inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=list[str] | None, default=typer.Option(
            None, *COMMAND_FLAGS["set_"], help="FIELD=VALUE (repeatable; VALUE in TOML syntax), after the flags.",
            metavar="FIELD=VALUE", show_default=False)),
        *(_parameter(leaf) for leaf in sorted(knobs.values(), key=lambda leaf: not leaf.required)),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    command.__name__ = command.__qualname__ = f"{name}_command"
    return command


def check_device_available(config: Any, path: tuple[str, ...]) -> None:
    """Resolve the config's device setting once (lmforge.common.device; torch loads here): CUDA asked for on a
    machine without it is an LmforgeError before the command does anything slow."""
    from lmforge.common.device import resolve_device

    value = config
    for part in path:
        value = getattr(value, part)
    resolve_device(value)


def toml_epilog(cls: type) -> str:
    """--help's last paragraph: which TOML table each setting of a sectioned config goes in."""
    subs = sections(cls)
    if not subs:
        return "TOML (--config): the flag names with underscores, e.g. max_steps = 100."
    tables = "; ".join(f"[{name}] " + ", ".join(leaf.name for leaf in leaves(cls).values() if leaf.path[0] == name)
                       for name in subs)
    return f"TOML (--config): top-level keys, or in tables: {tables}."


def load_config(cls: type, config_file: Path | None, flags: dict) -> Any:
    """Defaults < TOML file < flags; a required setting given nowhere is a one-line error naming its flag."""
    nested = nest(cls, flags)
    if config_file is not None:
        nested = merge(nest(cls, read_toml(config_file)), nested)
    lacking = missing(cls, nested)
    if lacking:
        leaf = lacking[0]
        raise ConfigError(f"{leaf.flags[0]} is required (or {leaf.where} in a --config file)")
    check_types(cls, nested)
    return config_from_dict(cls, nested)


def parse_assignment(cls: type, text: str) -> tuple[str, object]:
    """`FIELD=VALUE` from --set, VALUE parsed as a TOML value (bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"--set expects FIELD=VALUE, got {text!r}")
    key, value = (s.strip() for s in text.split("=", 1))
    nest(cls, {key: None})  # an unknown name is refused here, by name
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def _base(hint: Any) -> Any:
    """`int | None` -> int; `tuple[str, ...]` -> list[str] (a repeatable flag)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    base = args[0]
    if typing.get_origin(base) in (tuple, list):
        return list[typing.get_args(base)[0]]
    return base


def _parameter(leaf: Leaf) -> inspect.Parameter:
    base = _base(leaf.hint)
    decls = list(leaf.flags)
    if base is bool:
        negative = leaf.negative or "--no-" + decls[0].removeprefix("--")
        decls[0] = f"{decls[0]}/{negative}"
    option = typer.Option(None, *decls, help=(leaf.help + _default_text(leaf, decls[0])).strip(),
                          show_default=False)
    return inspect.Parameter(leaf.name, inspect.Parameter.KEYWORD_ONLY, annotation=base | None, default=option)


def _default_text(leaf: Leaf, decl: str) -> str:
    if leaf.required:
        return "  [required]"
    value = leaf.default
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        on, off = decl.split("/")
        return f"  [default: {(on if value else off).removeprefix('--')}]"
    if isinstance(value, tuple):
        value = " ".join(map(str, value))
    return f"  [default: {value}]"


def _from_flag(leaf: Leaf, value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
