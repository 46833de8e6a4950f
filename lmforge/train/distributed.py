"""Parallelism applied from outside the model (torchtitan's parallelize.py shape): the process group from
torchrun's environment, DDP (Li et al. 2020) or FSDP2 by ZeRO stage, and on a device mesh tensor / sequence /
expert and pipeline parallelism (lmforge/train/parallel/); gradients SUMMED across data-parallel ranks (the loss is
already divided by the global token count). Checkpoints of distributed runs are sharded (sharded_checkpoint.py,
torch.distributed.checkpoint) under the whole model's parameter names, so they load in any layout; a
single-process safetensors checkpoint still loads here.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.common.lazy_types import loaded_class
from lmforge.model.transformer import Transformer
from lmforge.train.parallel.config import PARALLEL as PARALLEL_MODES
from lmforge.train.parallel.config import ParallelConfig

if TYPE_CHECKING:
    from lmforge.train.parallel.mesh import Layout
    from lmforge.train.parallel.pipeline import Pipeline

# torch.distributed's DTensor / FSDP2 / checkpoint / pipelining stack costs ~1.5 s of CPU to import: the layouts
# import it when they are used, so a single-process run (every CLI test, every laptop run) never pays for it.


def _sum_allreduce_hook(process_group, bucket):
    """DDP comm hook: all-reduce SUM (DDP's default averages, which would divide the global-token-normalised
    gradient by the world size a second time)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class Parallel:
    """The parallel plan of one process (a mode name, or the config's `parallel` section); mode 'none' is the plain
    single process."""

    def __init__(self, mode: str | ParallelConfig = "none", device: torch.device | None = None) -> None:
        config = mode if isinstance(mode, ParallelConfig) else None
        mode = config.parallel if config is not None else mode
        if mode not in PARALLEL_MODES:
            raise LmforgeError(f"parallel={mode!r}; allowed: {', '.join(PARALLEL_MODES)}")
        self.config = config or ParallelConfig(parallel=mode)
        self.mode, self.zero = mode, self.config.zero_stage
        self.layout: Layout | None = None
        self.pipeline: Pipeline | None = None
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = device or torch.device("cpu")
        self.dp_rank, self.dp_size = self.rank, self.world_size  # this rank's share of the data
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
                                    timeout=timedelta(seconds=self.config.collective_timeout))
        if self.config.layered:
            from lmforge.train.parallel.mesh import build_layout

            self.layout = build_layout(self.config, self.world_size, self.device.type)
            self.dp_rank, self.dp_size = self.layout.dp_rank, self.layout.dp_size

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- wrapping ----

    def wrap(self, model: nn.Module, micro_batches: int = 1, seq_len: int | None = None
             ) -> tuple[nn.Module, nn.Module]:
        """(model whose state dict is checkpointed, module to call forward on). Build the optimizer after this:
        FSDP2 and tensor parallelism swap the parameters for DTensors in place; with pipeline stages the model is
        this rank's stage (self.pipeline runs the steps)."""
        model = model.to(self.device)
        if self.layout is not None:
            model = self._apply_layout(model, micro_batches, seq_len)
            return model, model
        if self.mode == "ddp":
            ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            ddp.register_comm_hook(None, _sum_allreduce_hook)
            return model, ddp
        if self.mode == "fsdp":
            from lmforge.train.parallel.data_parallel import apply_fsdp

            apply_fsdp(model, None, self.zero, self.config.offload)
        return model, model

    def _apply_layout(self, model: nn.Module, micro_batches: int, seq_len: int | None) -> nn.Module:
        """torchtitan's order: split into the pipeline stage, tensor-parallelize it, then FSDP2 over the dp mesh."""
        from lmforge.train.parallel.data_parallel import apply_fsdp
        from lmforge.train.parallel.pipeline import Pipeline, PipelineStageModule, check_pipeline
        from lmforge.train.parallel.tensor_parallel import apply_tensor_parallel, check_tensor_parallel

        layout, cfg = self.layout, self.config
        if not isinstance(model, Transformer):
            raise LmforgeError(f"tp={layout.tp} / pp={layout.pp} apply to a plain lmforge Transformer, not "
                               f"{type(model).__name__} (MTP / PEFT wrappers train with tp=pp=1)")
        check_tensor_parallel(model.config, layout.tp, seq_len or layout.tp)
        check_pipeline(model.config, layout.pp, cfg.pp_schedule, micro_batches)
        if layout.pp > 1:
            model = PipelineStageModule(model, layout.pp_rank, layout.pp)
        if layout.tp > 1:
            apply_tensor_parallel(model, layout.tp_mesh)
            model.seq_shards = layout.tp
        if layout.fsdp_mesh is not None:
            apply_fsdp(model, layout.fsdp_mesh, self.zero, cfg.offload)
        if layout.pp > 1:
            self.pipeline = Pipeline(model, layout.pp_rank, layout.pp, self.device, layout.pp_group, cfg.pp_schedule,
                                     micro_batches, self.sum)
        return model

    def shard_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """ZeRO-1 (DDP): the optimizer's states sharded over the ranks (torch's ZeroRedundancyOptimizer)."""
        if self.mode != "ddp" or self.zero != 1:
            return optimizer
        from lmforge.train.parallel.data_parallel import ZeroOneOptimizer

        return ZeroOneOptimizer(optimizer)

    @property
    def clip(self):
        """The gradient clipping of this layout (None: torch's clip_grad_norm_, as in one process or plain FSDP)."""
        if self.layout is None:
            return None
        from lmforge.train.parallel.grad_norm import clip_grad_norm

        pp_group = self.layout.pp_group if self.layout.pp > 1 else None
        return lambda params, max_norm: clip_grad_norm(params, max_norm, pp_group)

    @property
    def can_sample(self) -> bool:
        """Whether generations run here: on rank 0, or on every rank for FSDP2; not under tp / pp (a KV cache holds
        the whole model's heads, a stage not the whole model)."""
        return self.layout is None or (self.layout.tp == 1 and self.layout.pp == 1)

    def no_sync(self, forward_model: nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step (DDP); FSDP2
        keeps its reduce-scatter per micro-batch (its gradients are sharded, so there is nothing to hold)."""
        if self.mode == "ddp" and not last_micro_batch:
            return forward_model.no_sync()
        return contextlib.nullcontext()

    # ---- collectives on small values ----

    def sum(self, value: float | int) -> float:
        """The sum over the data-parallel ranks (the tp and pp ranks of one replica hold the same data)."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, group=None if self.layout is None else self.layout.dp_group)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (e.g. a stop signal that reached one rank first)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([float(bool(flag))], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return bool(t.item())

    def max(self, value: float | int) -> float:
        """The largest value over all ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ---- state ----

    @staticmethod
    def reshard(model: nn.Module) -> None:
        """Put FSDP2 back on its sharded parameters: the root stays unsharded after a forward without backward
        (evaluation, samples), and the state-dict helpers map only the sharded parameters the optimizer holds."""
        fsdp_module = loaded_class("torch.distributed.fsdp", "FSDPModule")
        for module in model.modules() if fsdp_module is not None else ():
            if isinstance(module, fsdp_module):
                module.reshard()

    # Loading a full (single-process, safetensors) checkpoint: every rank reads the whole file and keeps its shards.
    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, sd: dict) -> None:
        if self.mode != "fsdp" or self.layout is not None and self.layout.pp > 1:
            optimizer.load_state_dict(sd)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

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
