"""ModelConfig's positions section: RoPE (base, long-context scaling, Gemma 3's local base), absolute
sinusoidal / learned vectors, ALiBi's per-head linear attention biases (BLOOM, MPT; alibi.py), or none; and Qwen's
LogN query scaling beyond the training length.

The rope_scaling dict is checked against the rotated width by ModelConfig (it knows the head size).
"""

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import none_or_int_above_one, none_or_positive, one_of

POS_EMBEDDINGS = ("rope", "sinusoidal", "learned", "alibi", "none")


@dataclass(frozen=True)
class PositionConfig:
    kind: str = "rope"  # rope | sinusoidal | learned (BERT, GPT-2) | alibi (BLOOM, MPT) | none
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # HF-style {"rope_type": linear|ntk|dynamic|yarn|llama3, "factor": ...}
    rope_local_theta: float | None = None  # RoPE base of sliding-window layers (Gemma 3); None = rope_theta
    logn_train_len: int | None = None  # Qwen logn-attn: queries scaled by log_L(position) beyond L tokens

    def __post_init__(self):
        one_of("ModelConfig.positions.kind", self.kind, POS_EMBEDDINGS)
        if not self.rope_theta > 0:
            raise ConfigError(f"ModelConfig.positions.rope_theta must be positive, got {self.rope_theta!r}")
        none_or_positive("ModelConfig.positions.rope_local_theta", self.rope_local_theta)
        none_or_int_above_one("ModelConfig.positions.logn_train_len", self.logn_train_len)
        if self.rope_scaling is not None and self.kind != "rope":
            raise ConfigError(f"ModelConfig.positions.rope_scaling needs kind='rope', got {self.kind!r}")
