"""Data parallelism applied from outside the model (torchtitan's parallelize.py shape): the process group from
torchrun's environment, DDP (Li et al. 2020) or FSDP2 (`fully_shard` per block, then the root), gradients SUMMED
across ranks (the loss is already divided by the global token count). Checkpoints of distributed runs are sharded
(sharded_checkpoint.py, torch.distributed.checkpoint); a single-process safetensors checkpoint still loads here.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from lmforge.common.errors import LmforgeError

PARALLEL_MODES = ("none", "ddp", "fsdp")


def _sum_allreduce_hook(process_group, bucket):
    """DDP comm hook: all-reduce SUM (DDP's default averages, which would divide the global-token-normalised
    gradient by the world size a second time)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class Parallel:
    """The data-parallel plan of one process; mode 'none' (or a world of one) is the plain single process."""

    def __init__(self, mode: str = "none", device: torch.device | None = None) -> None:
        if mode not in PARALLEL_MODES:
            raise LmforgeError(f"parallel={mode!r}; allowed: {', '.join(PARALLEL_MODES)}")
        self.mode = mode
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = device or torch.device("cpu")
        if mode == "none":
            if self.world_size > 1:
                raise LmforgeError(f"WORLD_SIZE={self.world_size} (launched by torchrun) but parallel='none'; "
                                   f"pass --parallel ddp or --parallel fsdp")
            return
        if "RANK" not in os.environ:
            raise LmforgeError(f"parallel={mode!r} needs torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR); "
                               f"launch with: torchrun --nproc_per_node N -m lmforge pretrain ...")
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    timeout=timedelta(minutes=10))

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- wrapping ----

    def wrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(model whose state dict is checkpointed, module to call forward on). Build the optimizer after this:
        FSDP2 swaps the parameters for sharded DTensors in place."""
        model = model.to(self.device)
        if self.mode == "ddp":
            ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            ddp.register_comm_hook(None, _sum_allreduce_hook)
            return model, ddp
        if self.mode == "fsdp":
            for block in model.layers:
                fully_shard(block)
            fully_shard(model)
            for module in model.modules():  # each fully_shard group reduces its own gradients
                if isinstance(module, FSDPModule):
                    module.set_gradient_divide_factor(1.0)  # sum, as for DDP above
                    module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
            return model, model
        return model, model

    def no_sync(self, forward_model: nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step (DDP); FSDP2
        keeps its reduce-scatter per micro-batch (its gradients are sharded, so there is nothing to hold)."""
        if self.mode == "ddp" and not last_micro_batch:
            return forward_model.no_sync()
        return contextlib.nullcontext()

    # ---- collectives on small values ----

    def sum(self, value: float | int) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (e.g. a stop signal that reached one rank first)."""
        return bool(self.sum(int(bool(flag)))) if self.distributed else bool(flag)

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ---- state ----

    @staticmethod
    def reshard(model: nn.Module) -> None:
        """Put FSDP2 back on its sharded parameters: the root stays unsharded after a forward without backward
        (evaluation, samples), and the state-dict helpers map only the sharded parameters the optimizer holds."""
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    # Loading a full (single-process, safetensors) checkpoint: every rank reads the whole file and keeps its shards.
    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, sd: dict) -> None:
        if self.mode != "fsdp":
            optimizer.load_state_dict(sd)
            return
        # the FQN of each integer id, in the order get_optimizer_state_dict lists the parameters (sharded: no gather)
        current = get_optimizer_state_dict(model, optimizer)
        fqns = [f for g in current["param_groups"] for f in g["params"]]
        groups = [{**g, "params": [fqns[i] for i in g["params"]]} for g in sd["param_groups"]]
        full = {"state": {fqns[int(i)]: s for i, s in sd["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
