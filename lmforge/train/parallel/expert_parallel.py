"""Expert parallelism over the tensor-parallel ranks (DeepSpeed-MoE / Megatron's all-gather token dispatcher): the
stacked expert weights become DTensors sharded by expert (Shard(0)), each rank runs the rows routed to its own
experts, and the per-rank outputs (zeros elsewhere) are summed with DTensor's Partial -> Replicate all-reduce.
The tokens are already replicated over the tp ranks there (sequence parallelism gathers them before the MLP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from lmforge.model.moe import Experts, run_experts

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class ExpertParallelExperts(nn.Module):
    """Drop-in for moe.Experts (same parameter names, so checkpoints move between layouts) holding only this rank's
    experts: n_experts / mesh size of them, those with ids first .. first + n_local - 1."""

    def __init__(self, experts: Experts, mesh: DeviceMesh) -> None:
        super().__init__()
        self.mesh = mesh
        self.n_experts = experts.gate_proj.shape[0]
        self.n_local = self.n_experts // mesh.size()
        self.first = mesh.get_local_rank() * self.n_local
        for name in PROJECTIONS:
            weight = getattr(experts, name)
            setattr(self, name, nn.Parameter(distribute_tensor(weight.detach(), mesh, [Shard(0)]),
                                             requires_grad=weight.requires_grad))

    def forward(self, x_sorted: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x_sorted [N*k, D] grouped by expert over ALL experts (the same on every rank) -> outputs [N*k, D]."""
        before = sum(counts[:self.first])
        local_counts = counts[self.first:self.first + self.n_local]
        rows = sum(local_counts)
        # the input's gradient comes back partial (each rank's experts saw only their rows): declared Partial, so
        # DTensor all-reduces it in backward (Megatron's "f")
        x = DTensor.from_local(x_sorted, self.mesh, [Replicate()], run_check=False).to_local(
            grad_placements=[Partial()])
        gate, up, down = (getattr(self, name).to_local() for name in PROJECTIONS)
        if rows:
            local = run_experts(x[before:before + rows], local_counts, gate, up, down)
        else:  # no row routed to this rank's experts: an empty pass keeps x and the weights in the graph, so this
            # rank's backward still joins the gradient all-reduce (and FSDP's reduce-scatter) of the other ranks
            xs = x[before:before]
            local = (F.silu(xs @ gate[0].T) * (xs @ up[0].T)) @ down[0].T
        dim = x_sorted.shape[-1]
        full = torch.cat([local.new_zeros(before, dim), local, local.new_zeros(x_sorted.shape[0] - before - rows, dim)])
        # the sum over ranks (Megatron's "g"): exact, every row is one rank's value plus zeros
        return DTensor.from_local(full, self.mesh, [Partial()], run_check=False).redistribute(
            self.mesh, [Replicate()]).to_local()
