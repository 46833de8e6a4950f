"""Pipeline parallelism with torch.distributed.pipelining (GPipe, Huang et al., 2019; 1F1B, Narayanan et al., 2019
"PipeDream"): the decoder's layers split into contiguous stages (torchtitan's manual split: the first stage keeps the
embedding, the last the final norm and LM head, parameter names unchanged so checkpoints move between layouts), the
step's --grad-accum micro-batches run through the schedule, the loss on the last stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from lmforge.common.errors import LmforgeError
from lmforge.model.attention_backend import SDPA
from lmforge.model.config import ModelConfig
from lmforge.model.layer_inputs import layer_inputs
from lmforge.model.transformer import Transformer, float32_logits
from lmforge.train.step import token_loss_sum

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def check_pipeline(cfg: ModelConfig, pp: int, schedule: str, micro_batches: int) -> None:
    if pp == 1:
        return
    if cfg.n_layers < pp:
        raise LmforgeError(f"pp={pp} stages need at least {pp} layers; the model has n_layers={cfg.n_layers}")
    if cfg.tie_embeddings:
        raise LmforgeError("pp > 1 puts the embedding on the first stage and the LM head on the last: untie them "
                           "(tie_embeddings=false in the model config) or use pp=1")
    if cfg.heads.mlm or cfg.heads.final_logit_softcap is not None or cfg.heads.n_mtp_modules:
        raise LmforgeError("pp > 1 supports plain decoder LMs (no MLM head, logit soft-cap or MTP modules)")
    if cfg.moe.n_routed_experts and cfg.moe.aux_loss_coef > 0:
        raise LmforgeError("pp > 1 with an MoE auxiliary balance loss is not supported (it would not reach earlier "
                           "stages); set aux_loss_coef=0 (router-bias balancing works)")
    if schedule == "1f1b" and micro_batches < pp:
        raise LmforgeError(f"pp_schedule 1f1b needs --grad-accum (micro-batches) >= pp={pp}, got {micro_batches}; "
                           f"raise --grad-accum or use --pp-schedule gpipe")


def stage_layers(n_layers: int, stage: int, n_stages: int) -> range:
    """Contiguous layer ids of `stage`: as even as possible, earlier stages one more when uneven."""
    base, extra = divmod(n_layers, n_stages)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (stage < extra))


class PipelineStageModule(nn.Module):
    """One stage of a Transformer: its blocks (as layers.<i>), plus embed on the first and norm + lm_head on the last.
    forward: token ids (first stage) or hidden states -> hidden states, or logits (last stage)."""

    def __init__(self, model: Transformer, stage: int, n_stages: int) -> None:
        super().__init__()
        self.config = model.config
        self.first, self.last = stage == 0, stage == n_stages - 1
        self.embed = model.embed if self.first else None
        self.extras = getattr(model, "extras", None) if self.first else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in stage_layers(len(model.layers), stage, n_stages)})
        self.norm = model.norm if self.last else None
        self.lm_head = model.lm_head if self.last else None
        self.seq_shards = 1  # set by the tensor-parallel step: hidden states arrive as T / tp tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            B, T = x.shape
            positions = torch.arange(T, device=x.device).expand(B, T)
            h = self.embed(x)
            if self.extras is not None:
                h = self.extras(h, positions, None)
        else:
            h, B, T = x, x.shape[0], x.shape[1] * self.seq_shards
            positions = torch.arange(T, device=x.device).expand(B, T)
        per_layer = layer_inputs(self.config, None, positions, 0, T, h.dtype)
        for name, layer in self.layers.items():
            cos, sin, mask, is_causal, q_scale = per_layer[int(name)]
            h = layer(h, cos, sin, mask, is_causal, SDPA, q_scale)
        return float32_logits(self.lm_head, self.norm(h)) if self.last else h


class Pipeline:
    """The schedule of this rank's stage; step() runs one optimizer step's forward and backward over the pp group."""

    def __init__(self, stage_module: PipelineStageModule, stage: int, n_stages: int, device: torch.device,
                 group: dist.ProcessGroup, schedule: str, micro_batches: int,
                 dp_sum: Callable[[float], float]) -> None:
        self.module, self.group, self.micro_batches, self.dp_sum = stage_module, group, micro_batches, dp_sum
        self.device = device
        self.stage = PipelineStage(stage_module, stage, n_stages, device, group=group)
        self.total = 1  # the step's global count of target tokens: each micro-batch's loss sum is divided by it
        self.schedule = SCHEDULES[schedule](self.stage, n_microbatches=micro_batches, loss_fn=self._loss,
                                            scale_grads=False)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_loss_sum(logits, targets) / self.total

    def _run(self, run: Callable, x: torch.Tensor, y: torch.Tensor, over_dp: bool = True) -> float:
        """The summed micro-batch losses of the last stage (0 elsewhere), summed over the pp ranks, and over the dp
        ranks when they ran different data (training; evaluation reads the same batches on every rank)."""
        losses: list[torch.Tensor] = []
        if self.module.first:
            run(x)
        elif self.module.last:
            run(target=y, losses=losses)
        else:
            run()
        local = float(sum(float(v) for v in losses))
        t = torch.tensor([self.dp_sum(local) if over_dp else local], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.group)
        return float(t.item())

    def step(self, micro: list[tuple], total: int,
             autocast: Callable[[], contextlib.AbstractContextManager]) -> float:
        """Forward and backward of the micro-batches (gradients of sum CE / total); returns the mean token loss."""
        x, y = torch.cat([b[0] for b in micro]), torch.cat([b[1] for b in micro])
        self.total = total
        with autocast():
            return self._run(self.schedule.step, x, y)

    @torch.no_grad()
    def evaluate(self, batches: list[tuple], autocast: Callable[[], contextlib.AbstractContextManager]
                 ) -> tuple[float, int]:
        """(summed token cross-entropy, target tokens) over `batches`, taken in groups of micro_batches batches (the
        stages exchange micro-batches of the training shape); a last incomplete group is left out."""
        self.total, loss, count = 1, 0.0, 0
        for i in range(0, len(batches) - self.micro_batches + 1, self.micro_batches):
            group = batches[i:i + self.micro_batches]
            x, y = torch.cat([b[0] for b in group]), torch.cat([b[1] for b in group])
            with autocast():
                loss += self._run(self.schedule.eval, x, y, over_dp=False)
            count += int((y != -100).sum())
        return loss, count
