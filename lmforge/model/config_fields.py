"""Small checks every ModelConfig section uses, so each error names its section and field the same way.

`where` is the dotted path a user writes (e.g. "ModelConfig.moe.n_group"); `section_from_dict` builds a section
from its JSON dict and refuses unknown keys by name.
"""

import dataclasses

from lmforge.common.errors import ConfigError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(where: str, value) -> None:
    if not is_int(value) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")


def non_negative_int(where: str, value) -> None:
    if not is_int(value) or value < 0:
        raise ConfigError(f"{where} must be an integer >= 0, got {value!r}")


def one_of(where: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")


def none_or_positive(where: str, value) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{where} must be None or positive, got {value!r}")


def none_or_int_above_one(where: str, value) -> None:
    if value is not None and (not is_int(value) or value <= 1):
        raise ConfigError(f"{where} must be None or an integer > 1, got {value!r}")


def section_from_dict(cls: type, data: dict, where: str):
    """A section dataclass from its dict (JSON), unknown keys refused by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of fields, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})  # a derived field (kind) may be there
    if unknown:
        raise ConfigError(f"unknown {where} field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**{k: v for k, v in data.items() if k in known})
