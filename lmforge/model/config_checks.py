"""Validation and derived values of ModelConfig's position / long-context / variant switches.

Kept beside config.py so the dataclass stays a readable list of fields: every error names the field and what
is allowed. `layer_window` says which layers use sliding-window attention (Mistral: all; Gemma3: 5 of 6).
"""

from lmforge.common.errors import ConfigError
from lmforge.model.positions import POS_EMBEDDINGS
from lmforge.model.rope_scaling import validate_rope_scaling


def check_architecture_fields(cfg) -> None:
    from lmforge.model.config import LAYER_TYPES, NORM_POSITIONS

    validate_rope_scaling(cfg.rope_scaling, cfg.resolved_head_dim)
    if cfg.pos_embedding not in POS_EMBEDDINGS:
        raise ConfigError(f"ModelConfig.pos_embedding must be one of {', '.join(POS_EMBEDDINGS)}, "
                          f"got {cfg.pos_embedding!r}")
    if cfg.norm_position not in NORM_POSITIONS:
        raise ConfigError(f"ModelConfig.norm_position must be one of {', '.join(NORM_POSITIONS)}, "
                          f"got {cfg.norm_position!r}")
    for name in ("logn_train_len", "sliding_window"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 1):
            raise ConfigError(f"ModelConfig.{name} must be None or an integer > 1, got {value!r}")
    for name in ("rope_local_theta", "query_pre_attn_scalar", "final_logit_softcap"):
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(f"ModelConfig.{name} must be None or positive, got {value!r}")
    if not isinstance(cfg.type_vocab_size, int) or cfg.type_vocab_size < 0:
        raise ConfigError(f"ModelConfig.type_vocab_size must be an integer >= 0, got {cfg.type_vocab_size!r}")
    if cfg.layer_types is not None:
        object.__setattr__(cfg, "layer_types", tuple(cfg.layer_types))  # JSON gives a list; keep it hashable
        if len(cfg.layer_types) != cfg.n_layers or any(t not in LAYER_TYPES for t in cfg.layer_types):
            raise ConfigError(f"ModelConfig.layer_types must list one of {', '.join(LAYER_TYPES)} for each of the "
                              f"{cfg.n_layers} layers, got {cfg.layer_types!r}")
        if "sliding" in cfg.layer_types and cfg.sliding_window is None:
            raise ConfigError("ModelConfig.layer_types has sliding layers but sliding_window is None")
    if cfg.rope_scaling is not None and cfg.pos_embedding != "rope":
        raise ConfigError(f"ModelConfig.rope_scaling needs pos_embedding='rope', got {cfg.pos_embedding!r}")


def layer_window(cfg, layer: int) -> int | None:
    """The sliding window of layer `layer`, or None for full attention."""
    if cfg.sliding_window is None:
        return None
    if cfg.layer_types is None or cfg.layer_types[layer] == "sliding":
        return cfg.sliding_window
    return None


def local_global_pattern(n_layers: int, local: int = 5, global_: int = 1) -> tuple[str, ...]:
    """Gemma-3-style layer types: `local` sliding layers then `global_` full layers, repeated ("5 local : 1 global")."""
    period = local + global_
    return tuple("sliding" if i % period < local else "full" for i in range(n_layers))

