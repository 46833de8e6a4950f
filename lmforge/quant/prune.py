"""Pruning: zero the least important weights of every block linear, by magnitude |W_ij| or by Wanda (Sun et al.,
2023, "A Simple and Effective Pruning Approach for Large Language Models": |W_ij| * ||X_j||, the weight times the
norm of its input channel over the calibration tokens), unstructured or N:M semi-structured (2:4 keeps two of every
four consecutive input weights of a row: the pattern sparse tensor cores run). Follows github.com/locuslab/wanda
(lib/prune.py: magnitude ranks a whole layer, Wanda each output row; blocks pruned in order, each calibrated on the
outputs of the blocks pruned before it). On a CPU the zeros save nothing yet: this measures quality.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.common.errors import ConfigError
from lmforge.quant.calibration import BlockInputs, block_prefixes, in_block

PRUNE_METHODS = ("magnitude", "wanda")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "wanda"
    sparsity: float = 0.5  # unstructured: the share of each layer's weights set to zero
    pattern: str = "unstructured"  # or "N:M": keep N of every M consecutive input weights (e.g. "2:4")

    def __post_init__(self):
        if self.method not in PRUNE_METHODS:
            raise ConfigError(f"unknown pruning method {self.method!r}; valid: {', '.join(PRUNE_METHODS)}")
        if self.pattern != "unstructured":
            self.n_m()
        elif not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity!r}")

    def n_m(self) -> tuple[int, int]:
        n, _, m = self.pattern.partition(":")
        if not (n.isdigit() and m.isdigit()) or not 0 < int(n) < int(m):
            raise ConfigError(f"pattern must be 'unstructured' or N:M with 0 < N < M (e.g. 2:4), got {self.pattern!r}")
        return int(n), int(m)


def importance(weight: torch.Tensor, method: str, column_norms: torch.Tensor | None = None) -> torch.Tensor:
    """|W| (magnitude) or |W| * ||X_j|| (Wanda), [N, K]."""
    metric = weight.detach().float().abs()
    return metric * column_norms.float()[None, :] if method == "wanda" else metric


def unstructured_mask(metric: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Boolean keep-mask zeroing the `sparsity` share with the lowest metric, per row or over the whole matrix."""
    if per_row:
        k = int(metric.shape[1] * sparsity)
        drop = metric.argsort(dim=1)[:, :k]
        return torch.ones_like(metric, dtype=torch.bool).scatter_(1, drop, False)
    k = int(metric.numel() * sparsity)
    drop = metric.flatten().argsort()[:k]
    return torch.ones(metric.numel(), dtype=torch.bool).scatter_(0, drop, False).reshape(metric.shape)


def n_m_mask(metric: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest of every m consecutive weights along each row (rows' length must be a multiple of m)."""
    N, K = metric.shape
    if K % m:
        raise ConfigError(f"{n}:{m} sparsity needs the input size to be a multiple of {m}, got {K}")
    groups = metric.reshape(N, K // m, m)
    keep = groups.topk(n, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(N, K)


def prune_mask(weight: torch.Tensor, cfg: PruneConfig, column_norms: torch.Tensor | None = None) -> torch.Tensor:
    metric = importance(weight, cfg.method, column_norms)
    if cfg.pattern != "unstructured":
        return n_m_mask(metric, *cfg.n_m())
    return unstructured_mask(metric, cfg.sparsity, per_row=cfg.method == "wanda")


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The block linears (Wanda prunes inside the blocks; embeddings and the LM head stay dense)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith("layers.")}


@torch.no_grad()
def prune_model(model: nn.Module, cfg: PruneConfig, windows: torch.Tensor | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Prune in place; returns {linear name: keep-mask} (for a recovery fine-tune that keeps the zeros).
    windows: calibration token ids [n, T], needed by Wanda."""
    if cfg.method == "wanda" and windows is None:
        raise ValueError("Wanda needs calibration windows")
    targets, masks = prunable_linears(model), {}
    inputs = BlockInputs(model, windows) if cfg.method == "wanda" else None
    prefixes = block_prefixes(model)
    for i, prefix in enumerate(prefixes):
        names = [name for name in targets if in_block(name, prefix)]
        stats = inputs.stats(i, names) if inputs is not None and names else {}
        for name in names:
            weight = targets[name].weight
            norms = stats[name].column_norms if name in stats else None
            masks[name] = prune_mask(weight, cfg, norms).to(weight.device)
            weight.mul_(masks[name])
        if inputs is not None and i + 1 < len(prefixes):
            inputs.advance(i)
        if log is not None:
            log(f"{cfg.method}: {prefix} ({len(names)} linears)")
    return masks


def sparsity_of(model: nn.Module) -> float:
    """The share of zeros in the block linears' weights."""
    weights = [m.weight for m in prunable_linears(model).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
