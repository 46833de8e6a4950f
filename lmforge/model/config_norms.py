"""ModelConfig's norms section: which normalisation (RMSNorm, LayerNorm, Gemma's (1 + w) RMSNorm), its epsilon,
and where blocks put it (pre-norm Llama, post-norm BERT, Gemma's sandwich of extra norms on the outputs).
"""

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import one_of

NORMS = ("rmsnorm", "layernorm", "gemma_rmsnorm")  # gemma_rmsnorm: RMSNorm scaled by (1 + w)
NORM_POSITIONS = ("pre", "post", "sandwich")


@dataclass(frozen=True)
class NormConfig:
    kind: str = "rmsnorm"  # rmsnorm | layernorm | gemma_rmsnorm
    eps: float = 1e-5
    position: str = "pre"  # pre | post (BERT) | sandwich (Gemma: extra norms on attention / MLP outputs)

    def __post_init__(self):
        one_of("ModelConfig.norms.kind", self.kind, NORMS)
        one_of("ModelConfig.norms.position", self.position, NORM_POSITIONS)
        if not self.eps > 0:
            raise ConfigError(f"ModelConfig.norms.eps must be positive, got {self.eps!r}")
