"""A two-way table of tensor names: Hugging Face patterns <-> lmforge patterns, `{i}` standing for a layer index.

Used by the per-architecture adapters (hf_gemma.py, hf_bert.py) so each is a list of name pairs plus config keys.
"""

import re

import torch

from lmforge.common.errors import LmforgeError


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")


class NameTable:
    def __init__(self, pairs: list[tuple[str, str]], ignored: tuple[str, ...] = ()):
        self.to_ours = [(_compile(hf), ours) for hf, ours in pairs]
        self.to_hf = [(_compile(ours), hf) for hf, ours in pairs]
        self.ignored = [_compile(p) for p in ignored]

    @staticmethod
    def _rename(name: str, table) -> str | None:
        for pattern, target in table:
            match = pattern.match(name)
            if match:
                return target.replace("{i}", match.group(1)) if match.groups() else target
        return None

    def from_hf(self, hf_state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        state = {}
        for name, tensor in hf_state.items():
            if any(p.match(name) for p in self.ignored):
                continue
            ours = self._rename(name, self.to_ours)
            if ours is None:
                raise LmforgeError(f"unexpected tensor {name!r} in a {family} checkpoint")
            state[ours] = tensor
        return state

    def to_hf_state(self, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in state.items():
            hf_name = self._rename(name, self.to_hf)
            if hf_name is None:
                raise LmforgeError(f"tensor {name!r} has no Hugging Face {family} equivalent")
            out[hf_name] = tensor
        return out
