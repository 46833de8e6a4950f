"""A two-way table of tensor names: Hugging Face patterns <-> lmforge patterns, `{i}` standing for a layer index.

Used by the per-architecture adapters (hf_gemma.py, hf_bert.py) so each is a list of name pairs plus config keys.
"""

import re

import torch

from lmforge.common.errors import LmforgeError


def hf_shape_fields(cfg) -> dict:
    """The config.json sizes every transformers decoder/encoder config names the same way."""
    return {"vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "max_position_embeddings": cfg.max_seq_len}


def compile_pattern(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")


def rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    """The target of the first pattern matching `name` (its layer index substituted), or None."""
    for pattern, target in table:
        match = pattern.match(name)
        if match:
            return target.replace("{i}", match.group(1)) if match.groups() else target
    return None


class NameTable:
    def __init__(self, pairs: list[tuple[str, str]], ignored: tuple[str, ...] = ()):
        self.to_ours = [(compile_pattern(hf), ours) for hf, ours in pairs]
        self.to_hf = [(compile_pattern(ours), hf) for hf, ours in pairs]
        self.ignored = [compile_pattern(p) for p in ignored]

    def from_hf(self, hf_state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        state = {}
        for name, tensor in hf_state.items():
            if any(p.match(name) for p in self.ignored):
                continue
            ours = rename(name, self.to_ours)
            if ours is None:
                raise LmforgeError(f"unexpected tensor {name!r} in a {family} checkpoint")
            state[ours] = tensor
        return state

    def to_hf_state(self, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in state.items():
            hf_name = rename(name, self.to_hf)
            if hf_name is None:
                raise LmforgeError(f"tensor {name!r} has no Hugging Face {family} equivalent")
            out[hf_name] = tensor
        return out
