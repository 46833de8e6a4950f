"""ModelConfig's two ends: the input embeddings (Gemma's sqrt(dim) scale, BERT's token types and embedding norm)
and the output heads (LM head with Gemma's logit soft-cap, BERT's masked-LM head, DeepSeek-V3's multi-token
prediction modules beside the model).
"""

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import non_negative_int, none_or_positive


@dataclass(frozen=True)
class EmbeddingConfig:
    scale: bool = False  # multiply token embeddings by sqrt(dim) (Gemma)
    norm: bool = False  # normalise the summed embeddings (BERT)
    type_vocab_size: int = 0  # token type (segment) embeddings (BERT: 2)

    def __post_init__(self):
        non_negative_int("ModelConfig.embeddings.type_vocab_size", self.type_vocab_size)


@dataclass(frozen=True)
class HeadsConfig:
    mlm: bool = False  # BERT masked-LM head: dense + activation + LayerNorm, decoder with bias
    final_logit_softcap: float | None = None  # logits = c * tanh(logits / c) (Gemma)
    n_mtp_modules: int = 0  # multi-token prediction depths (DeepSeek-V3, mtp.py): modules beside the model
    mtp_loss_weight: float = 0.3

    def __post_init__(self):
        none_or_positive("ModelConfig.heads.final_logit_softcap", self.final_logit_softcap)
        non_negative_int("ModelConfig.heads.n_mtp_modules", self.n_mtp_modules)
        if self.mtp_loss_weight < 0:
            raise ConfigError(f"ModelConfig.heads.mtp_loss_weight must be >= 0, got {self.mtp_loss_weight!r}")
