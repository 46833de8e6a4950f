"""The `parallel` section of the training config: the data-parallel engine (none / DDP / FSDP2), the mesh sizes
(tp x pp x dp_replicate x dp_shard = the world size), the pipeline schedule, the ZeRO stage and CPU offload
(Rajbhandari et al., 2020, "ZeRO"; torchtitan's parallelism knobs). Every knob is a `pretrain` flag."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.config_fields import setting
from lmforge.common.errors import ConfigError
from lmforge.train.config_sections import check_ints

PARALLEL = ("none", "ddp", "fsdp")
PP_SCHEDULES = ("gpipe", "1f1b")
# ZeRO stage -> the engine that gives it: 0 DDP; 1 DDP + ZeroRedundancyOptimizer (optimizer states sharded);
# 2 FSDP2 keeping the gathered parameters from forward to backward (states and gradients sharded); 3 FSDP2
# resharding after forward (parameters too).
ZERO_ENGINE = {0: "ddp", 1: "ddp", 2: "fsdp", 3: "fsdp"}


@dataclass(frozen=True)
class ParallelConfig:
    """How a torchrun job splits the work: data parallel (DDP or FSDP2, ZeRO stage, CPU offload), tensor parallel
    (attention heads, MLP and MoE experts over tp ranks) and pipeline parallel (layers in pp stages)."""

    parallel: str = setting("none", "none | ddp | fsdp (FSDP2): the data-parallel engine; launch with torchrun "
                            "--nproc_per_node N -m lmforge pretrain ... (batch size is per data-parallel rank; "
                            "checkpoints are sharded and resume on any layout with the same global batch).")
    tp: int = setting(1, "Tensor-parallel ranks: attention heads, MLP columns/rows and MoE experts (expert "
                      "parallel) split over them, the residual stream sharded by sequence (needs --parallel fsdp).")
    pp: int = setting(1, "Pipeline stages: the layers split into pp stages, --grad-accum micro-batches per step "
                      "(needs --parallel fsdp).")
    dp_replicate: int = setting(1, "Data-parallel replicas (HSDP: FSDP2 shards within a replica, replicates across).")
    dp_shard: int = setting(-1, "FSDP2 shard group size; -1: the ranks left (world / (tp * pp * dp_replicate)).")
    pp_schedule: str = setting("1f1b", "Pipeline schedule: gpipe (all forwards, then all backwards) | 1f1b (one "
                               "forward, one backward: fewer micro-batches in flight).")
    zero: int | None = setting(None, "ZeRO stage: 0 | 1 (with ddp: optimizer states sharded) | 2 | 3 (with fsdp: "
                               "+ gradients, + parameters); default: 0 for ddp, 3 for fsdp.")
    offload: bool = setting(False, "FSDP2 CPU offload: parameters, gradients and the optimizer step on the CPU "
                            "(CPUOffloadPolicy; needs --parallel fsdp).")
    collective_timeout: int = setting(600, "Seconds a collective waits for a missing rank before the job fails (a "
                                      "dead rank's peers otherwise wait until this timeout; torchrun also stops "
                                      "the other local ranks when one exits).")

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL:
            raise ConfigError(f"ParallelConfig.parallel={self.parallel!r}; allowed: {', '.join(PARALLEL)}")
        if self.pp_schedule not in PP_SCHEDULES:
            raise ConfigError(f"ParallelConfig.pp_schedule={self.pp_schedule!r}; allowed: {', '.join(PP_SCHEDULES)}")
        check_ints(self, 1, "tp", "pp", "dp_replicate", "collective_timeout")
        if self.dp_shard != -1:
            check_ints(self, 1, "dp_shard")
        if self.zero is not None and self.zero not in ZERO_ENGINE:
            raise ConfigError(f"ParallelConfig.zero={self.zero!r}; allowed: 0, 1, 2, 3")
        if self.zero is not None and self.parallel != "none" and ZERO_ENGINE[self.zero] != self.parallel:
            raise ConfigError(f"zero={self.zero} is a --parallel {ZERO_ENGINE[self.zero]} stage, not "
                              f"{self.parallel}: ZeRO 0/1 run on ddp, ZeRO 2/3 on fsdp")
        if self.offload and self.parallel != "fsdp":
            raise ConfigError(f"offload needs --parallel fsdp (FSDP2's CPUOffloadPolicy), got {self.parallel!r}")
        if (self.tp > 1 or self.pp > 1) and self.parallel != "fsdp":
            raise ConfigError(f"tp={self.tp}, pp={self.pp} compose with FSDP2 on the device mesh: pass --parallel "
                              f"fsdp (got {self.parallel!r})")
        if self.parallel != "fsdp" and (self.dp_replicate > 1 or self.dp_shard != -1):
            raise ConfigError("dp_replicate / dp_shard shape the FSDP2 mesh: pass --parallel fsdp")

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage in effect (0 without a data-parallel engine)."""
        if self.zero is not None:
            return self.zero
        return {"none": 0, "ddp": 0, "fsdp": 3}[self.parallel]

    @property
    def layered(self) -> bool:
        """Whether the job uses the device mesh beyond plain data parallelism (TP, PP, HSDP, a set shard size)."""
        return self.tp > 1 or self.pp > 1 or self.dp_replicate > 1 or self.dp_shard != -1
