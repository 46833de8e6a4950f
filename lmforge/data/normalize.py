"""Unicode and whitespace normalisation: Unicode normal form (NFC by default, as in CCNet, Wenzek et al.
2020), invisible/control characters removed, line endings unified, runs of spaces and blank lines collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lmforge.data.validate import one_of

FORMS = ("NFC", "NFKC", "NFD", "NFKD", "none")
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


@dataclass(frozen=True)
class NormalizeConfig:
    """form: Unicode normal form ('NFC', 'NFKC', … or 'none'). strip_invisible: remove zero-width characters
    and soft hyphens. collapse_spaces: runs of spaces/tabs (incl. no-break and ideographic spaces) become one
    space and lines are stripped. max_blank_lines: at most this many consecutive empty lines (1 by default).
    """

    form: str = "NFC"
    strip_invisible: bool = True
    collapse_spaces: bool = True
    max_blank_lines: int = 1

    def __post_init__(self) -> None:
        one_of("form", self.form, FORMS)
        one_of("max_blank_lines", self.max_blank_lines, (0, 1, 2, 3))


class Normalizer:
    """`normalize(text)` returns the cleaned text (a pure function of the text and the config)."""

    name = "normalize"

    def __init__(self, config: NormalizeConfig | None = None) -> None:
        self.config = config or NormalizeConfig()

    def normalize(self, text: str) -> str:
        cfg = self.config
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if cfg.form != "none":
            text = unicodedata.normalize(cfg.form, text)
        if cfg.strip_invisible:
            text = _INVISIBLE.sub("", text)
        text = _CONTROL.sub("", text)
        if cfg.collapse_spaces:
            text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = re.sub(rf"\n{{{cfg.max_blank_lines + 2},}}", "\n" * (cfg.max_blank_lines + 1), text)
        return text.strip()
