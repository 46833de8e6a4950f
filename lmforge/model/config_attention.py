"""ModelConfig's attention section: GQA (multi-head, grouped- and multi-query) or MLA (DeepSeek-V2/V3 latent).

Both kinds share the switches every attention layer has (biases, causality, sliding windows, Gemma's query scale);
`GQAConfig` adds KV heads, head size and Qwen3's QK-norm, `MLAConfig` the low-rank latent sizes. `layer_window`
says which layers use sliding-window attention (Mistral: all; Gemma 3: 5 of 6).
"""

from dataclasses import dataclass, field

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import none_or_int_above_one, none_or_positive, one_of, positive_int, section_from_dict

ATTENTIONS = ("gqa", "mla")
LAYER_TYPES = ("full", "sliding")
MLA_MODES = ("auto", "naive", "absorbed")


@dataclass(frozen=True)
class AttentionCommon:
    qkv_bias: bool = False  # Qwen2 and BERT put biases on the q/k/v projections
    o_bias: bool = False
    causal: bool = True  # False: bidirectional encoder attention (BERT)
    sliding_window: int | None = None  # a query sees this many keys (itself included); None = full attention
    layer_types: tuple[str, ...] | None = None  # per layer "full" | "sliding"; None = all sliding if window set
    query_pre_attn_scalar: float | None = None  # attention scale scalar^-0.5 (Gemma); None = head_dim^-0.5

    def _check_common(self) -> None:
        where = "ModelConfig.attention"
        none_or_int_above_one(f"{where}.sliding_window", self.sliding_window)
        none_or_positive(f"{where}.query_pre_attn_scalar", self.query_pre_attn_scalar)
        if self.layer_types is not None:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))  # JSON gives a list; keep it hashable
            if any(t not in LAYER_TYPES for t in self.layer_types):
                raise ConfigError(f"ModelConfig.attention.layer_types must list one of {', '.join(LAYER_TYPES)} "
                                  f"per layer, got {self.layer_types!r}")
            if "sliding" in self.layer_types and self.sliding_window is None:
                raise ConfigError("ModelConfig.attention.layer_types has sliding layers but sliding_window is None")


@dataclass(frozen=True)
class GQAConfig(AttentionCommon):
    """Multi-head attention with n_kv_heads shared K/V heads (None = n_heads: MHA; 1: MQA; else GQA)."""

    n_kv_heads: int | None = None
    head_dim: int | None = None  # None = dim // n_heads
    qk_norm: bool = False  # Qwen3 / Gemma 3 normalise each head's q and k with RMSNorm before RoPE
    kind: str = field(default="gqa", init=False)

    def __post_init__(self):
        self._check_common()
        for name in ("n_kv_heads", "head_dim"):
            if getattr(self, name) is not None:
                positive_int(f"ModelConfig.attention.{name}", getattr(self, name))


@dataclass(frozen=True)
class MLAConfig(AttentionCommon):
    """Multi-head latent attention (DeepSeek-V2/V3, mla.py): K/V compressed to a cached latent c_kv."""

    q_lora_rank: int | None = None  # None = plain q_proj; else q is compressed to this rank first
    kv_lora_rank: int = 512  # width of the cached latent c_kv
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64  # the decoupled RoPE key, shared by all heads
    v_head_dim: int = 128
    rope_interleave: bool = False  # DeepSeek checkpoints store RoPE channels as interleaved pairs (x0,x1),(x2,x3)
    mla_mode: str = "auto"  # naive (decompress K/V) | absorbed (attend to the latent) | auto (absorbed to decode)
    kind: str = field(default="mla", init=False)

    def __post_init__(self):
        self._check_common()
        one_of("ModelConfig.attention.mla_mode", self.mla_mode, MLA_MODES)
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            positive_int(f"ModelConfig.attention.{name}", getattr(self, name))
        if self.q_lora_rank is not None:
            positive_int("ModelConfig.attention.q_lora_rank", self.q_lora_rank)
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"ModelConfig.attention.qk_rope_head_dim={self.qk_rope_head_dim} must be even for RoPE")


ATTENTION_KINDS: dict[str, type] = {"gqa": GQAConfig, "mla": MLAConfig}


def attention_from_dict(data: dict) -> GQAConfig | MLAConfig:
    """The attention section of a JSON config: {"kind": "gqa" | "mla", ...fields}."""
    kind = data.get("kind", "gqa") if isinstance(data, dict) else None
    one_of("ModelConfig.attention.kind", kind, ATTENTIONS)
    return section_from_dict(ATTENTION_KINDS[kind], data, f"ModelConfig.attention ({kind})")


def layer_window(cfg, layer: int) -> int | None:
    """The sliding window of layer `layer` of a ModelConfig, or None for full attention."""
    att = cfg.attention
    if att.sliding_window is None:
        return None
    if att.layer_types is None or att.layer_types[layer] == "sliding":
        return att.sliding_window
    return None


def local_global_pattern(n_layers: int, local: int = 5, global_: int = 1) -> tuple[str, ...]:
    """Gemma-3-style layer types: `local` sliding layers then `global_` full layers, repeated ("5 local : 1 global")."""
    period = local + global_
    return tuple("sliding" if i % period < local else "full" for i in range(n_layers))
