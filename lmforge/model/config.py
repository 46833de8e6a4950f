"""ModelConfig: the sizes every decoder has, and one section per concept for the switches that tell families apart.

Sections: attention (GQAConfig | MLAConfig), ffn (dense MLP kind) and moe (routed experts), positions (RoPE and its
scaling, sinusoidal, learned), norms, embeddings and heads (LM, masked-LM, multi-token prediction). Each section
validates its own fields; this class checks what spans sections (head sizes, layer counts, token ids). A config is
data: `to_dict` / `save` write the nested form, `from_dict` / `load` also read the flat files older versions wrote,
and `from_flat(**keys)` takes the flat keywords (presets, HF mappings). `family` names the HF architecture.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.common.errors import ConfigError
from lmforge.model.config_attention import GQAConfig, MLAConfig, attention_from_dict
from lmforge.model.config_ffn import FFNConfig, MoEConfig
from lmforge.model.config_fields import positive_int
from lmforge.model.config_flat import FLAT_KEYS, SECTION_TYPES, SECTIONS, from_flat, to_flat
from lmforge.model.config_heads import EmbeddingConfig, HeadsConfig
from lmforge.model.config_norms import NormConfig
from lmforge.model.config_positions import PositionConfig
from lmforge.model.param_count import count_params
from lmforge.model.rope_scaling import validate_rope_scaling

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3", "bert", "deepseek_v3", "qwen3_moe", "bloom")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32000
    dim: int = 512  # hidden size d_model
    n_layers: int = 8
    n_heads: int = 8
    ffn_dim: int = 1376  # hidden size of the dense MLP
    max_seq_len: int = 2048
    family: str = "llama"  # HF architecture the weights follow (FAMILIES)
    tie_embeddings: bool = True
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    attention: GQAConfig | MLAConfig = field(default_factory=GQAConfig)
    ffn: FFNConfig = field(default_factory=FFNConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    positions: PositionConfig = field(default_factory=PositionConfig)
    norms: NormConfig = field(default_factory=NormConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len"):
            positive_int(f"ModelConfig.{name}", getattr(self, name))
        if self.family not in FAMILIES:
            raise ConfigError(f"ModelConfig.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if not self.init_std > 0:
            raise ConfigError(f"ModelConfig.init_std must be positive, got {self.init_std!r}")
        expected = {"attention": (GQAConfig, MLAConfig), **{k: (t,) for k, t in SECTION_TYPES.items()}}
        for name, types in expected.items():
            if not isinstance(getattr(self, name), types):
                raise ConfigError(f"ModelConfig.{name} must be a {' or '.join(t.__name__ for t in types)} (or a dict "
                                  f"through from_dict), got {getattr(self, name)!r}")
        self._check_attention_shape()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"ModelConfig.{name}={value} is outside the vocabulary [0, {self.vocab_size})")
        bad = [i for i in self.moe.mlp_only_layers if i >= self.n_layers]
        if bad:
            raise ConfigError(f"ModelConfig.moe.mlp_only_layers holds {bad}: layer indices must lie in "
                              f"[0, {self.n_layers})")
        validate_rope_scaling(self.positions.rope_scaling, self.rope_dim)

    def _check_attention_shape(self) -> None:
        att = self.attention
        if isinstance(att, GQAConfig):
            if att.n_kv_heads is not None and self.n_heads % att.n_kv_heads:
                raise ConfigError(f"ModelConfig.attention.n_kv_heads={att.n_kv_heads} must be a positive divisor "
                                  f"of n_heads={self.n_heads}")
            if att.head_dim is None and self.dim % self.n_heads:
                raise ConfigError(f"ModelConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                                  "set attention.head_dim explicitly")
            if self.resolved_head_dim % 2:
                raise ConfigError(f"ModelConfig head_dim={self.resolved_head_dim} must be even for RoPE")
        if att.layer_types is not None and len(att.layer_types) != self.n_layers:
            raise ConfigError(f"ModelConfig.attention.layer_types must list one type for each of the "
                              f"{self.n_layers} layers, got {len(att.layer_types)}")

    @property
    def resolved_head_dim(self) -> int:
        """Width of one query/key head (MLA: its RoPE part, as HF's config.json states it)."""
        att = self.attention
        if isinstance(att, MLAConfig):
            return att.qk_rope_head_dim
        return att.head_dim if att.head_dim is not None else self.dim // self.n_heads

    @property
    def resolved_kv_heads(self) -> int:
        att = self.attention
        return att.n_kv_heads if isinstance(att, GQAConfig) and att.n_kv_heads is not None else self.n_heads

    @property
    def rope_dim(self) -> int:
        """Channels RoPE rotates: the head dim, or MLA's decoupled RoPE part."""
        return self.resolved_head_dim

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes`: top-level fields, whole sections, or flat keys (e.g. sliding_window=8)."""
        if set(changes) <= {f.name for f in dataclasses.fields(self)} and not any(
                k == "attention" and isinstance(v, str) for k, v in changes.items()):
            return dataclasses.replace(self, **changes)
        sections = {k: v for k, v in changes.items() if k in SECTIONS and not isinstance(v, str)}
        flat = {k: v for k, v in changes.items() if k not in sections}
        return self.from_flat(**{**self.to_flat(), **flat, **sections})

    def to_dict(self) -> dict:
        """The nested form: top-level fields and one dict per section (attention with its "kind")."""
        out = dataclasses.asdict(self)
        out["attention"] = {"kind": self.attention.kind, **{k: v for k, v in out["attention"].items() if k != "kind"}}
        return out

    def to_flat(self) -> dict:
        """One key per switch, the names configs had before the sections (FLAT_KEYS)."""
        return to_flat(self)

    @classmethod
    def from_flat(cls, **keys) -> "ModelConfig":
        """From flat keys (n_kv_heads=2, rope_theta=1e6, attention="mla", ...), section dicts or section objects."""
        return from_flat(cls, keys)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """The nested form `to_dict` writes, or the flat form of older lmforge versions (both may mix)."""
        if isinstance(data.get("attention"), dict):
            data = {**data, "attention": attention_from_dict(data["attention"])}
        return cls.from_flat(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"model config not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"model config {path} is not valid JSON: {err}") from None

    def num_params(self, active: bool = False) -> int:
        """Parameter count from the shapes alone (embeddings counted once when tied; MTP modules not counted).

        active=True counts what one token uses: the top-k routed experts of each MoE layer, not all of them.
        """
        return count_params(self, active)  # by component: lmforge.model.param_count.param_breakdown


__all__ = ["FAMILIES", "FLAT_KEYS", "EmbeddingConfig", "FFNConfig", "GQAConfig", "HeadsConfig", "MLAConfig",
           "ModelConfig", "MoEConfig", "NormConfig", "PositionConfig"]
