"""Load and save for the frozen dataclass configs of runs (TrainConfig, SFTConfig, ...): dict, JSON and TOML,
with unknown fields refused by name, so a typo in a config file or a `--set` is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, Self

from lmforge.common.errors import ConfigError


class ConfigIO:
    """Mixin for frozen dataclasses: replace / to_dict / from_dict / from_toml / save."""

    def replace(self, **changes: Any) -> Self:
        check_fields(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        check_fields(cls, data)
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
