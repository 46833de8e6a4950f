"""T5Config: the sizes and switches of a T5 encoder-decoder (Raffel et al., 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer"; T5 v1.1's gated-GELU feed-forward).

A frozen dataclass validated on creation, as ModelConfig is; `feed_forward` takes transformers' names ("relu" for
the original T5, "gated-gelu" for v1.1, "gated-silu", ...).
"""

import dataclasses
from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import positive_int

ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")  # transformers' ACT2FN names (gelu_new: the tanh form)


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    dim: int = 512  # d_model
    head_dim: int = 64  # d_kv (n_heads * head_dim need not equal dim)
    n_heads: int = 8
    ffn_dim: int = 2048  # d_ff
    n_layers: int = 6  # encoder blocks
    n_decoder_layers: int = 6
    num_buckets: int = 32  # relative position buckets
    max_distance: int = 128  # distances beyond this share the last bucket
    feed_forward: str = "relu"  # [gated-]ACT: relu (T5) | gated-gelu (T5 v1.1, flan-t5) | gated-silu | ...
    norm_eps: float = 1e-6
    scale_decoder_outputs: bool = True  # decoder output * dim^-0.5 before the LM head (T5 with tied embeddings)
    tie_embeddings: bool = True  # the LM head is the shared embedding
    max_seq_len: int = 512  # longest decoder output generated (relative positions have no hard limit)
    pad_token_id: int | None = 0
    eos_token_id: int | None = 1
    decoder_start_token_id: int = 0
    family: str = dataclasses.field(default="t5", init=False)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "head_dim", "n_heads", "ffn_dim", "n_layers", "n_decoder_layers",
                     "num_buckets", "max_distance", "max_seq_len"):
            positive_int(f"T5Config.{name}", getattr(self, name))
        if self.num_buckets < 4:
            raise ConfigError(f"T5Config.num_buckets must be >= 4 (half exact, half logarithmic), got "
                              f"{self.num_buckets}")
        if self.activation not in ACTIVATIONS or len(self.feed_forward.split("-")) > 2 or \
                ("-" in self.feed_forward and not self.feed_forward.startswith("gated-")):
            raise ConfigError(f"T5Config.feed_forward must be ACT or gated-ACT with ACT one of "
                              f"{', '.join(ACTIVATIONS)}, got {self.feed_forward!r}")
        if not self.norm_eps > 0:
            raise ConfigError(f"T5Config.norm_eps must be positive, got {self.norm_eps!r}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"T5Config.{name}={value} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def gated(self) -> bool:
        return self.feed_forward.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward.split("-")[-1]
        return "gelu_new" if self.feed_forward == "gated-gelu" else act  # transformers' legacy reading

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
