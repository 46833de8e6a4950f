"""Longer context at inference time: give a loaded model a RoPE scaling (position interpolation, NTK, YaRN,
Llama 3) and a larger max_seq_len by replacing its config. The model reads `config` on every forward (RoPE
frequencies are recomputed per call, see layer_inputs.py), so nothing else has to be rebuilt.
"""

import dataclasses

from lmforge.common.errors import ConfigError
from lmforge.model.config import ModelConfig

EXTENSION_TYPES = ("linear", "ntk", "yarn", "llama3")


def extended_config(cfg: ModelConfig, rope_type: str | None = None, factor: float | None = None,
                    original_max_len: int | None = None, max_context: int | None = None) -> ModelConfig:
    """The config with rope_scaling {rope_type, factor, ...} and max_seq_len = max_context (default: the original
    length x factor). original_max_len: the context the model was trained on (default: its max_seq_len)."""
    if cfg.positions.kind != "rope" and rope_type is not None:
        raise ConfigError(f"--rope-scaling needs a RoPE model; this one uses {cfg.positions.kind!r} positions")
    if rope_type is None:
        if factor is not None or original_max_len is not None:
            raise ConfigError("--rope-factor / --original-max-len need --rope-scaling TYPE")
        return cfg if max_context is None else dataclasses.replace(cfg, max_seq_len=_positive("max_context",
                                                                                                max_context))
    if rope_type not in EXTENSION_TYPES:
        hint = " (dynamic NTK already adapts to the length; it needs no extension)" if rope_type == "dynamic" else ""
        raise ConfigError(f"rope scaling type must be one of {', '.join(EXTENSION_TYPES)}, got {rope_type!r}{hint}")
    if factor is None or not factor > 1:
        raise ConfigError(f"--rope-factor must be > 1 to extend the context, got {factor!r}")
    original = _positive("original_max_len", original_max_len or cfg.max_seq_len)
    scaling: dict = {"rope_type": rope_type, "factor": float(factor)}
    if rope_type in ("yarn", "llama3"):
        scaling["original_max_position_embeddings"] = original
    if rope_type == "llama3":
        scaling.update(low_freq_factor=1.0, high_freq_factor=4.0)  # Llama 3.1's values
    new_len = _positive("max_context", max_context or int(original * factor))
    return cfg.replace(rope_scaling=scaling, max_seq_len=new_len)


def extend_context(model, rope_type: str | None = None, factor: float | None = None,
                   original_max_len: int | None = None, max_context: int | None = None) -> ModelConfig:
    """Apply extended_config to a loaded Transformer in place; returns the new config."""
    model.config = extended_config(model.config, rope_type, factor, original_max_len, max_context)
    return model.config


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value
