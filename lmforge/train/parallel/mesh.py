"""The device mesh of a layout (torchtitan's ParallelDims): world = pp x dp_replicate x dp_shard x tp, named
dimensions, and the groups the trainer needs: FSDP2's mesh (dp_shard, or dp_replicate x dp_shard for HSDP), the
flattened data-parallel group (loss and token sums, the data split), the tp mesh and the pp group."""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from lmforge.common.errors import LmforgeError
from lmforge.train.parallel.config import ParallelConfig

DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass
class Layout:
    mesh: DeviceMesh
    sizes: dict[str, int]
    fsdp_mesh: DeviceMesh | None  # None: one data-parallel rank, nothing to shard
    dp_group: dist.ProcessGroup
    dp_rank: int
    dp_size: int
    tp_mesh: DeviceMesh
    pp_group: dist.ProcessGroup
    pp_rank: int

    @property
    def pp(self) -> int:
        return self.sizes["pp"]

    @property
    def tp(self) -> int:
        return self.sizes["tp"]


def mesh_sizes(cfg: ParallelConfig, world: int) -> dict[str, int]:
    """Each dimension's size; dp_shard=-1 takes the ranks left. A product that is not the world is an error."""
    rest = cfg.tp * cfg.pp * cfg.dp_replicate
    shard = cfg.dp_shard if cfg.dp_shard != -1 else world // rest
    sizes = {"pp": cfg.pp, "dp_replicate": cfg.dp_replicate, "dp_shard": max(shard, 1), "tp": cfg.tp}
    if sizes["pp"] * sizes["dp_replicate"] * sizes["dp_shard"] * sizes["tp"] != world:
        raise LmforgeError(f"layout pp={cfg.pp} x dp_replicate={cfg.dp_replicate} x dp_shard={shard} x tp={cfg.tp} "
                           f"does not make the {world} ranks torchrun started; choose sizes whose product is {world}")
    return sizes


def build_layout(cfg: ParallelConfig, world: int, device_type: str) -> Layout:
    sizes = mesh_sizes(cfg, world)
    mesh = init_device_mesh(device_type, tuple(sizes[d] for d in DIMS), mesh_dim_names=DIMS)
    dp = mesh["dp_replicate", "dp_shard"]._flatten("dp")
    dp_size = sizes["dp_replicate"] * sizes["dp_shard"]
    fsdp_mesh = None if dp_size == 1 else mesh["dp_replicate", "dp_shard"] if sizes["dp_replicate"] > 1 \
        else mesh["dp_shard"]
    return Layout(mesh=mesh, sizes=sizes, fsdp_mesh=fsdp_mesh, dp_group=dp.get_group(), dp_rank=dp.get_local_rank(),
                  dp_size=dp_size, tp_mesh=mesh["tp"], pp_group=mesh["pp"].get_group(),
                  pp_rank=mesh["pp"].get_local_rank())
