"""Global gradient-norm clipping over any layout: gradients may be plain tensors or DTensors on different meshes
(the tp mesh, FSDP2's dp or dp x tp mesh) and, with pipeline stages, each rank holds only its stage's: the norm is
taken per (mesh, placements) group, made whole with DTensor's full_tensor, summed in squares over the pp group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def global_grad_norm(grads: list[torch.Tensor], pp_group: dist.ProcessGroup | None = None) -> torch.Tensor:
    groups: dict[object, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else None
        groups.setdefault(key, []).append(g)
    squares = []
    for members in groups.values():
        norm = torch.nn.utils.get_total_norm(members, 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares.append(norm.float().pow(2))
    total = torch.stack(squares).sum() if squares else torch.zeros(())
    if pp_group is not None:
        dist.all_reduce(total, group=pp_group)
    return total.sqrt()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, pp_group: dist.ProcessGroup | None = None) -> float:
    """Scale the gradients so their global norm is at most max_norm (as torch's clip_grad_norm_: coefficient
    max_norm / (norm + 1e-6), clamped at 1); returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = global_grad_norm(grads, pp_group)
    coef = float(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    for g in grads:
        g.mul_(coef)
    return float(norm)
