"""ModelConfig's feed-forward sections: the dense MLP every layer may have, and routed experts (MoE).

`FFNConfig` is the MLP kind (SwiGLU, GeGLU, GELU, ReLU) and its bias; `MoEConfig` turns layers into DeepSeekMoE /
Qwen3-MoE routed experts (n_routed_experts=0 keeps every MLP dense). `is_moe_layer` says which layers route
(DeepSeek first_k_dense_replace, Qwen decoder_sparse_step); the parameter arithmetic lives in param_count.py.
"""

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.model.config_fields import is_int, non_negative_int, one_of, positive_int

MLPS = ("swiglu", "gelu", "geglu", "relu", "gelu_erf")  # gelu/geglu use the tanh approximation; gelu_erf: exact
ROUTERS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class FFNConfig:
    kind: str = "swiglu"  # swiglu (Llama, Qwen) | geglu (Gemma) | gelu | gelu_erf (BERT) | relu
    bias: bool = False

    def __post_init__(self):
        one_of("ModelConfig.ffn.kind", self.kind, MLPS)


@dataclass(frozen=True)
class MoEConfig:
    n_routed_experts: int = 0  # 0 = no routed experts: every layer keeps its dense MLP
    n_experts_per_tok: int = 2  # top-k
    ffn_dim: int | None = None  # hidden size of one routed expert; None = ModelConfig.ffn_dim
    n_shared_experts: int = 0  # always-on experts (DeepSeekMoE), each of ffn_dim
    router: str = "softmax"  # softmax (DeepSeek-V2, Qwen3-MoE) | sigmoid (DeepSeek-V3)
    norm_topk_prob: bool = True  # renormalise the top-k gate weights to sum to 1
    routed_scaling_factor: float = 1.0
    n_group: int = 1  # group-limited routing: experts in n_group groups, tokens may use topk_group of them
    topk_group: int = 1
    router_score_bias: bool = False  # DeepSeek-V3 e_score_correction_bias: selection-only, aux-loss-free balance
    first_k_dense_replace: int = 0  # the first k layers keep a dense MLP of ModelConfig.ffn_dim
    layer_step: int = 1  # Qwen decoder_sparse_step: layer i is MoE when (i + 1) % step == 0
    mlp_only_layers: tuple[int, ...] = ()
    aux_loss_coef: float = 0.0  # Switch/DeepSeek load-balancing loss weight (0 = not computed)

    def __post_init__(self):
        object.__setattr__(self, "mlp_only_layers", tuple(self.mlp_only_layers))
        one_of("ModelConfig.moe.router", self.router, ROUTERS)
        if not is_int(self.n_routed_experts) or self.n_routed_experts < 0:
            raise ConfigError(f"ModelConfig.moe.n_routed_experts must be >= 0 (0 = dense MLPs), "
                              f"got {self.n_routed_experts!r}")
        for name in ("n_shared_experts", "first_k_dense_replace"):
            non_negative_int(f"ModelConfig.moe.{name}", getattr(self, name))
        if self.aux_loss_coef < 0 or self.routed_scaling_factor <= 0:
            raise ConfigError("ModelConfig.moe.aux_loss_coef must be >= 0 and routed_scaling_factor > 0, got "
                              f"{self.aux_loss_coef!r} and {self.routed_scaling_factor!r}")
        bad = [i for i in self.mlp_only_layers if not is_int(i) or i < 0]
        if bad:
            raise ConfigError(f"ModelConfig.moe.mlp_only_layers holds {bad}: layer indices must be >= 0")
        if self.n_routed_experts:
            self._check_routing()

    def _check_routing(self) -> None:
        for name in ("n_experts_per_tok", "n_group", "topk_group", "layer_step"):
            positive_int(f"ModelConfig.moe.{name}", getattr(self, name))
        if self.ffn_dim is not None:
            positive_int("ModelConfig.moe.ffn_dim", self.ffn_dim)
        if self.n_experts_per_tok > self.n_routed_experts:
            raise ConfigError(f"ModelConfig.moe.n_experts_per_tok={self.n_experts_per_tok} exceeds "
                              f"n_routed_experts={self.n_routed_experts}")
        if self.n_routed_experts % self.n_group or self.topk_group > self.n_group:
            raise ConfigError(f"ModelConfig.moe.n_group={self.n_group} must divide n_routed_experts="
                              f"{self.n_routed_experts} and be >= topk_group={self.topk_group}")
        per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and (per_group < 2 or self.topk_group * per_group < self.n_experts_per_tok):
            raise ConfigError(f"group-limited routing needs >= 2 experts per group and topk_group * experts per "
                              f"group >= n_experts_per_tok; got n_group={self.n_group}, topk_group={self.topk_group}")


def is_moe_layer(cfg, layer_idx: int) -> bool:
    """Whether layer `layer_idx` of a ModelConfig has a routed MoE."""
    moe = cfg.moe
    return (moe.n_routed_experts > 0 and layer_idx >= moe.first_k_dense_replace
            and layer_idx not in moe.mlp_only_layers and (layer_idx + 1) % moe.layer_step == 0)
