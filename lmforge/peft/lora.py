"""LoRA (Hu et al., 2021, "Low-Rank Adaptation of Large Language Models"): y = W x + (alpha / r) * B A dropout(x).

The base W is frozen (a float nn.Linear, or an int8/int4 one: QLoRA-style); only A [r, in] (kaiming-uniform, as
`peft` does) and B [out, r] (zeros, so the model is unchanged at init) train. merge/unmerge fold B A into a float W
and back; a quantized W cannot hold the sum, so merging refuses and `unload_lora(merge=True)` builds a float linear.
"""

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.peft.qlora import frozen_quantized_linear, is_quantized, make_differentiable

ALL_LINEAR = "all-linear"  # every linear layer except the output head (peft's shorthand)
OUTPUT_HEADS = ("lm_head",)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: float = 0.0  # dropout on the input of A (training mode only)
    # Module names (a name matches a module whose dotted path ends with it) or ("all-linear",).
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoraConfig.r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not self.alpha > 0:
            raise ConfigError(f"LoraConfig.alpha must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
        targets = (self.target_modules,) if isinstance(self.target_modules, str) else tuple(self.target_modules)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError(f"LoraConfig.target_modules must be non-empty module names (e.g. 'q_proj') or "
                              f"'{ALL_LINEAR}', got {self.target_modules!r}")
        object.__setattr__(self, "target_modules", targets)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


class LoraLinear(nn.Module):
    """A frozen base linear plus a trainable low-rank update; a drop-in replacement for the base."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        weight = base.weight
        dtype = torch.float32 if is_quantized(base) else weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's init: uniform(+-1/sqrt(in)) for a=sqrt(5)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / (math.sqrt(r) if use_rslora else r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False  # B A is folded into the base weight
        self.enabled = True  # False: behave as the base alone (e.g. the reference model of PPO / DPO)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) * B A, [out, in]: what merging adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = frozen_quantized_linear(self.base, x) if is_quantized(self.base) else self.base(x)
        if self.merged or not self.enabled:
            return y
        h = self.dropout(x).to(self.lora_A.dtype)
        return y + ((h @ self.lora_A.T) @ self.lora_B.T * self.scaling).to(y.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def _is_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear or is_quantized(module)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_targets(model: nn.Module, target_modules: tuple[str, ...]) -> list[str]:
    """Names of the linear layers LoRA wraps; a target matching none of them is an error naming the choices."""
    modules = dict(model.named_modules())
    wrapped = {f"{name}.base" for name, m in modules.items() if isinstance(m, LoraLinear)}
    linears = [n for n, m in modules.items() if isinstance(m, LoraLinear) or (_is_linear(m) and n not in wrapped)]
    if ALL_LINEAR in target_modules:
        return [n for n in linears if n.rsplit(".", 1)[-1] not in OUTPUT_HEADS]
    chosen = []
    for target in target_modules:
        hits = [n for n in linears if _matches(n, target)]
        if not hits:
            available = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ConfigError(f"LoRA target module {target!r} matches no linear layer of the model; available: "
                              f"{', '.join(available)} (or '{ALL_LINEAR}')")
        chosen += [n for n in hits if n not in chosen]
    return [n for n in linears if n in chosen]  # model order


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Wrap the target linears in LoraLinear, in place; every other parameter is frozen. Returns the model."""
    if lora_layers(model):
        raise LmforgeError("the model already has LoRA layers; merge or unload them before applying LoRA again")
    targets = find_targets(model, cfg.target_modules)
    freeze(model)
    make_differentiable(model, skip=set(targets))  # QLoRA: gradients through frozen int8/int4 layers
    for name in targets:
        base = model.get_submodule(name)
        layer = LoraLinear(base, cfg.r, cfg.alpha, cfg.dropout, cfg.use_rslora).train(base.training)  # eval stays eval
        _set_submodule(model, name, layer)
    model.lora_config = cfg
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, LoraLinear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLinear)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{'<module>.lora_A': [r, in], '<module>.lora_B': [out, r]} in lmforge module names (detached)."""
    state = {}
    for name, layer in lora_layers(model):
        state[f"{name}.lora_A"] = layer.lora_A.detach()
        state[f"{name}.lora_B"] = layer.lora_B.detach()
    return state


def _require_layers(model: nn.Module, what: str) -> list[tuple[str, LoraLinear]]:
    layers = lora_layers(model)
    if not layers:
        raise LmforgeError(f"cannot {what}: the model has no LoRA layers (apply_lora or load_adapter first)")
    return layers


@torch.no_grad()
def merge_lora(model: nn.Module) -> None:
    """Fold B A into each float base weight (faster inference, same outputs); undone by unmerge_lora."""
    layers = _require_layers(model, "merge LoRA")
    quantized = [name for name, layer in layers if is_quantized(layer.base)]
    if quantized:
        raise LmforgeError(f"cannot merge LoRA into the quantized base of {quantized[0]} (int8/int4 cannot hold the "
                           "sum exactly); use unload_lora(model, merge=True) to get float layers, or load the base "
                           "in float")
    for _, layer in layers:
        if not layer.merged:
            layer.base.weight += layer.delta_weight().to(layer.base.weight.dtype)
            layer.merged = True


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> None:
    """Subtract B A from each merged base weight again, so training can continue."""
    for _, layer in _require_layers(model, "unmerge LoRA"):
        if layer.merged:
            layer.base.weight -= layer.delta_weight().to(layer.base.weight.dtype)
            layer.merged = False


@torch.no_grad()
def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every LoraLinear by a plain layer: its base with B A merged (merge=True) or dropped.

    A quantized base with merge=True becomes a float nn.Linear holding dequantize(W) + B A (in the LoRA dtype).
    """
    for name, layer in _require_layers(model, "unload LoRA"):
        base = layer.base
        if merge and not layer.merged and is_quantized(base):
            plain = nn.Linear(layer.in_features, layer.out_features, bias=base.bias is not None,
                              device=layer.lora_A.device, dtype=layer.lora_A.dtype)
            plain.weight.copy_(base.dequantize().to(plain.weight.dtype) + layer.delta_weight())
            if base.bias is not None:
                plain.bias.copy_(base.bias)
            base = plain
        elif merge and not layer.merged:
            base.weight += layer.delta_weight().to(base.weight.dtype)
        elif not merge and layer.merged:
            base.weight -= layer.delta_weight().to(base.weight.dtype)
        _set_submodule(model, name, base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model alone inside the block (a free reference model for KL penalties)."""
    layers = _require_layers(model, "disable LoRA")
    if any(layer.merged for _, layer in layers):
        raise LmforgeError("cannot disable merged LoRA layers; unmerge_lora(model) first")
    try:
        for _, layer in layers:
            layer.enabled = False
        yield
    finally:
        for _, layer in layers:
            layer.enabled = True
