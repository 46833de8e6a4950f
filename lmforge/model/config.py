"""ModelConfig: every architectural switch of the dense decoder as one frozen, validated dataclass.

A config is data, not code: it loads from and saves to JSON, named presets live in `presets.py`, and the
`family` field records which Hugging Face architecture (Llama, Qwen2, Qwen3) the weights follow.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import ConfigError
from lmforge.model.param_count import count_params
from lmforge.model.sparse_config import check_sparse_fields

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3", "bert", "deepseek_v3", "qwen3_moe")
NORMS = ("rmsnorm", "layernorm", "gemma_rmsnorm")  # gemma_rmsnorm: RMSNorm scaled by (1 + w)
MLPS = ("swiglu", "gelu", "geglu", "relu", "gelu_erf")  # gelu/geglu use the tanh approximation; gelu_erf: exact
NORM_POSITIONS = ("pre", "post", "sandwich")
LAYER_TYPES = ("full", "sliding")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32000
    dim: int = 512  # hidden size d_model
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # None = n_heads (multi-head); 1 = multi-query; else grouped-query
    head_dim: int | None = None  # None = dim // n_heads
    ffn_dim: int = 1376  # hidden size of the MLP
    max_seq_len: int = 2048
    family: str = "llama"  # HF architecture the weights follow: llama | qwen2 | qwen3
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 1e-5
    mlp: str = "swiglu"  # swiglu | gelu
    mlp_bias: bool = False
    rope_theta: float = 10000.0
    qkv_bias: bool = False  # Qwen2 puts biases on q/k/v projections
    o_bias: bool = False
    qk_norm: bool = False  # Qwen3 normalises each head's q and k with RMSNorm before RoPE
    tie_embeddings: bool = True
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    # Positions, long context and architecture variants (see rope_scaling.py, positions.py, attention_mask.py).
    rope_scaling: dict | None = None  # HF-style {"rope_type": linear|ntk|dynamic|yarn|llama3, "factor": ...}
    rope_local_theta: float | None = None  # RoPE base of sliding-window layers (Gemma3); None = rope_theta
    pos_embedding: str = "rope"  # rope | sinusoidal | learned | none
    logn_train_len: int | None = None  # Qwen logn-attn: queries scaled by log_L(position) beyond L tokens
    sliding_window: int | None = None  # a query sees this many keys (itself included); None = full attention
    layer_types: tuple[str, ...] | None = None  # per layer "full" | "sliding"; None = all sliding if window set
    norm_position: str = "pre"  # pre | post (BERT) | sandwich (Gemma: extra norms on attn/MLP outputs)
    embed_scale: bool = False  # multiply token embeddings by sqrt(dim) (Gemma)
    embed_norm: bool = False  # normalise the summed embeddings (BERT)
    type_vocab_size: int = 0  # token type (segment) embeddings (BERT: 2)
    causal: bool = True  # False: bidirectional encoder attention
    mlm_head: bool = False  # BERT masked-LM head: dense + activation + LayerNorm, decoder with bias
    query_pre_attn_scalar: float | None = None  # attention scale scalar^-0.5 (Gemma); None = head_dim^-0.5
    final_logit_softcap: float | None = None  # logits = c * tanh(logits / c) (Gemma)
    # Multi-head latent attention (DeepSeek-V2/V3, mla.py); the fields below it apply only to attention="mla".
    attention: str = "gqa"  # gqa (multi-head, grouped- and multi-query) | mla
    q_lora_rank: int | None = None  # None = plain q_proj; else q is compressed to this rank first
    kv_lora_rank: int = 512  # width of the cached latent c_kv
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64  # the decoupled RoPE key, shared by all heads
    v_head_dim: int = 128
    rope_interleave: bool = False  # DeepSeek checkpoints store RoPE channels as interleaved pairs (x0,x1),(x2,x3)
    mla_mode: str = "auto"  # naive (decompress K/V) | absorbed (attend to the latent) | auto (absorbed to decode)
    # Mixture of experts (DeepSeekMoE / Qwen3-MoE, moe.py); n_routed_experts=0 keeps every MLP dense.
    n_routed_experts: int = 0
    n_experts_per_tok: int = 2  # top-k
    moe_ffn_dim: int | None = None  # hidden size of one routed expert; None = ffn_dim
    n_shared_experts: int = 0  # always-on experts (DeepSeekMoE), each of moe_ffn_dim
    router: str = "softmax"  # softmax (DeepSeek-V2, Qwen3-MoE) | sigmoid (DeepSeek-V3)
    norm_topk_prob: bool = True  # renormalise the top-k gate weights to sum to 1
    routed_scaling_factor: float = 1.0
    n_group: int = 1  # group-limited routing: experts in n_group groups, tokens may use topk_group of them
    topk_group: int = 1
    router_score_bias: bool = False  # DeepSeek-V3 e_score_correction_bias: selection-only, aux-loss-free balance
    first_k_dense_replace: int = 0  # the first k layers keep a dense MLP of ffn_dim
    moe_layer_step: int = 1  # Qwen decoder_sparse_step: layer i is MoE when (i + 1) % step == 0
    mlp_only_layers: tuple[int, ...] = ()
    aux_loss_coef: float = 0.0  # Switch/DeepSeek load-balancing loss weight (0 = not computed)
    # Multi-token prediction (DeepSeek-V3, mtp.py): modules beside the model, not inside it.
    n_mtp_modules: int = 0
    mtp_loss_weight: float = 0.3

    def __post_init__(self):
        object.__setattr__(self, "mlp_only_layers", tuple(self.mlp_only_layers))
        check_sparse_fields(self)
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.family not in FAMILIES:
            raise ConfigError(f"ModelConfig.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"ModelConfig.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.mlp not in MLPS:
            raise ConfigError(f"ModelConfig.mlp must be one of {', '.join(MLPS)}, got {self.mlp!r}")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ConfigError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must be a positive divisor of n_heads={self.n_heads}"
            )
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(
                f"ModelConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}; set head_dim explicitly"
            )
        if self.resolved_head_dim % 2:
            raise ConfigError(f"ModelConfig head_dim={self.resolved_head_dim} must be even for RoPE")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("ModelConfig.rope_theta, norm_eps and init_std must be positive")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"ModelConfig.{name}={value} is outside the vocabulary [0, {self.vocab_size})")
        from lmforge.model.config_checks import check_architecture_fields  # the variant switches above

        check_architecture_fields(self)

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

    @property
    def resolved_kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    def replace(self, **changes) -> "ModelConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)

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

    @property
    def rope_dim(self) -> int:
        """Channels RoPE rotates: the head dim, or MLA's decoupled RoPE part."""
        return self.qk_rope_head_dim if self.attention == "mla" else self.resolved_head_dim

    def num_params(self, active: bool = False) -> int:
        """Parameter count from the shapes alone (embeddings counted once when tied; MTP modules not counted).

        active=True counts what one token uses: the top-k routed experts of each MoE layer, not all of them.
        """
        return count_params(self, active)  # by component: lmforge.model.param_count.param_breakdown
