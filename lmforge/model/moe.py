"""Mixture of experts: DeepSeekMoE (Dai et al., 2024) fine-grained routed + shared experts, and Qwen3-MoE.

A router scores every expert (softmax as DeepSeek-V2 / Qwen3-MoE, or sigmoid as DeepSeek-V3), optionally limits
each token to its best expert groups, and picks the top-k. Tokens are sorted by expert id so each expert runs one
matmul on a contiguous slice (a loop over experts, never over tokens). Load balancing: a Switch/DeepSeek
auxiliary loss, or DeepSeek-V3's auxiliary-loss-free selection bias nudged by `update_router_bias` between steps.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.config_ffn import is_moe_layer
from lmforge.model.mlp import SwiGLU, make_mlp


class Router(nn.Module):
    """Top-k expert choice per token; `score_bias` (DeepSeek-V3's e_score_correction_bias) moves the choice only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.moe.n_routed_experts, cfg.moe.n_experts_per_tok
        self.kind, self.norm_topk, self.scaling = cfg.moe.router, cfg.moe.norm_topk_prob, cfg.moe.routed_scaling_factor
        self.n_group, self.topk_group, self.init_std = cfg.moe.n_group, cfg.moe.topk_group, cfg.init_std
        self.weight = nn.Parameter(torch.empty(cfg.moe.n_routed_experts, cfg.dim))
        if cfg.moe.router_score_bias:
            self.register_buffer("score_bias", torch.zeros(cfg.moe.n_routed_experts, dtype=torch.float32))
        else:
            self.score_bias = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate weights [N, k] float32, expert ids [N, k], scores [N, E] float32) for tokens x [N, D]."""
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.softmax(-1) if self.kind == "softmax" else logits.sigmoid()
        choice = scores.detach() if self.score_bias is None else scores.detach() + self.score_bias
        if self.n_group > 1:  # keep the topk_group groups whose two best experts score highest
            grouped = choice.view(-1, self.n_group, self.n_experts // self.n_group)
            best_groups = grouped.topk(2, dim=-1).values.sum(-1).topk(self.topk_group, dim=-1).indices
            keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool).scatter_(1, best_groups, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, self.n_experts)
        ids = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, ids)
        if self.norm_topk:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.scaling, ids, scores

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)


class Experts(nn.Module):
    """n SwiGLU experts stored as stacked weights [E, F, D] / [E, D, F] (one tensor per projection)."""

    def __init__(self, n_experts: int, dim: int, hidden: int, init_std: float = 0.02):
        super().__init__()
        self.init_std = init_std
        self.gate_proj = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.up_proj = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.down_proj = nn.Parameter(torch.empty(n_experts, dim, hidden))

    def reset_parameters(self) -> None:
        for p in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(p, std=self.init_std)

    def forward(self, x_sorted: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x_sorted [N*k, D] grouped by expert (counts[e] rows for expert e, in order) -> outputs [N*k, D].

        unbind splits each stacked weight once (indexing w[e] per expert would allocate a full-size gradient per
        expert in backward); outputs are concatenated rather than written into a buffer, for the same reason.
        """
        return run_experts(x_sorted, counts, self.gate_proj, self.up_proj, self.down_proj)


def run_experts(x_sorted: torch.Tensor, counts: list[int], gate: torch.Tensor, up: torch.Tensor,
                down: torch.Tensor) -> torch.Tensor:
    """SwiGLU experts with stacked weights [E, F, D] / [E, F, D] / [E, D, F] over rows grouped by expert (counts[e]
    rows for expert e): the whole set (Experts), or one rank's slice of them (expert parallelism, outside the model)."""
    outs = []
    weights = zip(gate.unbind(0), up.unbind(0), down.unbind(0), strict=True)
    for xs, (w_gate, w_up, w_down), n in zip(x_sorted.split(counts), weights, counts, strict=True):
        if n:
            outs.append((F.silu(xs @ w_gate.T) * (xs @ w_up.T)) @ w_down.T)
    return torch.cat(outs) if outs else x_sorted.new_zeros(x_sorted.shape)


class MoE(nn.Module):
    """Routed experts (+ shared experts). After each forward: `expert_counts` [E] and `aux_loss` (or None)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.moe.ffn_dim or cfg.ffn_dim
        self.top_k, self.aux_loss_coef = cfg.moe.n_experts_per_tok, cfg.moe.aux_loss_coef
        self.router = Router(cfg)
        self.experts = Experts(cfg.moe.n_routed_experts, cfg.dim, hidden, cfg.init_std)
        self.shared = SwiGLU(cfg.dim, hidden * cfg.moe.n_shared_experts) if cfg.moe.n_shared_experts else None
        self.expert_counts: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None
        self.load_since_update: torch.Tensor | None = None  # summed expert_counts since update_router_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, ids, scores = self.router(flat)
        ids = ids.reshape(-1)
        order = ids.argsort(stable=True)  # slots grouped by expert
        counts = torch.bincount(ids, minlength=self.router.n_experts)
        token_of = order // self.top_k
        out = self.experts(flat[token_of], counts.tolist())
        out = out * weights.reshape(-1)[order, None].to(out.dtype)
        y = torch.zeros_like(flat).index_add_(0, token_of, out)
        if self.shared is not None:
            y = y + self.shared(flat)
        self.record(counts, scores)
        return y.view(shape)

    def record(self, counts: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep per-expert loads for logging and bias updates; compute the auxiliary balance loss if asked.

        aux = coef * E * sum_e f_e * P_e with f_e the fraction of routed slots sent to e and P_e its mean
        (normalised) router score: minimal when both are uniform (Switch Transformer; DeepSeek-V2's L_ExpBal).
        """
        self.expert_counts = counts.detach()
        if self.training:  # evaluation passes do not steer the balancing bias
            previous = self.load_since_update
            self.load_since_update = self.expert_counts if previous is None else previous + self.expert_counts
        self.aux_loss = None
        if self.aux_loss_coef > 0:
            f = counts.float() / counts.sum().clamp(min=1)
            p = (scores / scores.sum(-1, keepdim=True)).mean(0)
            self.aux_loss = self.aux_loss_coef * self.router.n_experts * (f * p).sum()


def make_ffn(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    """The feed-forward part of layer `layer_idx`: an MoE where the config routes, else the dense MLP."""
    return MoE(cfg) if is_moe_layer(cfg, layer_idx) else make_mlp(cfg)


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the auxiliary balance losses of the model's MoE layers from the last forward (0 if none)."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    if not losses:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack(losses).sum()


@torch.no_grad()
def update_router_bias(model: nn.Module, gamma: float) -> None:
    """Auxiliary-loss-free balancing (DeepSeek-V3): bias_e += gamma * sign(mean load - load_e).

    Uses the loads counted in training mode since the previous call (all forwards of a step), then resets
    them. Call it from the training loop after each optimizer step; the bias never receives gradients.
    """
    layers = [m for m in moe_layers(model) if m.router.score_bias is not None]
    if not layers:
        raise LmforgeError("update_router_bias needs MoE layers with router_score_bias=True")
    for m in layers:
        if m.load_since_update is None:
            continue  # no forward since the last update
        load = m.load_since_update.float().to(m.router.score_bias.device)
        m.router.score_bias += gamma * torch.sign(load.mean() - load)
        m.load_since_update = None
