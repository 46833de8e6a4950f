"""One optimizer step with gradient accumulation: the loss is the sum of per-unit losses (target tokens; pairs for
the preference objectives) over ALL micro-batches divided by the global count of units (not a mean of
per-micro-batch means, which would weight short micro-batches more), then clipping, a finite check, and the
update, skipped when anything is non-finite.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.transformer import Transformer
from lmforge.train.chunked_ce import linear_cross_entropy

IGNORE_INDEX = -100

# extra_losses(model) -> a scalar added to each micro-batch's loss (MoE load-balancing, MTP, ...), averaged
# over the micro-batches. token_count_reduce(n) -> the global count (a distributed wrapper all-reduces it).
ExtraLosses = Callable[[nn.Module], torch.Tensor]
# loss_fn(logits, inputs, labels) -> the SUM of per-token losses (default: token_loss_sum), e.g. distillation.
TokenLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# batch_loss(model, batch) -> the SUM of the batch's per-unit losses, forward pass included (a whole objective:
# preference pairs); count(micro_batches) -> the number of units they hold (default: target tokens).
BatchLossFn = Callable[[nn.Module, tuple], torch.Tensor]
BatchCount = Callable[[Sequence[tuple]], int]


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over the positions whose label is not IGNORE_INDEX."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def count_targets(micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return int(sum((batch[1] != IGNORE_INDEX).sum().item() for batch in micro_batches))


def accumulate_gradients(model: nn.Module, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                         autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                         scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
                         extra_losses: ExtraLosses | None = None,
                         token_count_reduce: Callable[[int], int] = lambda n: n,
                         loss_fn: TokenLossFn | None = None,
                         loss_sum_reduce: Callable[[float], float] = lambda s: s,
                         no_sync: Callable[[bool], contextlib.AbstractContextManager] = lambda last: (
                             contextlib.nullcontext()),
                         batch_loss: BatchLossFn | None = None, count: BatchCount = count_targets,
                         ) -> tuple[float, int]:
    """Backward over every micro-batch; returns (mean unit loss of the step, global units).

    loss_fn(logits, x, y) replaces the token cross-entropy sum (distillation); batch_loss(model, batch) with count
    replaces the whole next-token objective (preference pairs). Distributed: token_count_reduce and
    loss_sum_reduce sum over the ranks, and no_sync(is_last_micro_batch) holds the gradient all-reduce until the
    last backward (DDP)."""
    total = max(token_count_reduce(count(micro_batches)), 1)
    loss_sum = 0.0
    for i, batch in enumerate(micro_batches):
        with no_sync(i == len(micro_batches) - 1):
            with autocast():
                loss_part = (batch_loss or _next_token_loss(loss_fn))(model, batch)
                loss = loss_part / total
                if extra_losses is not None:
                    loss = loss + extra_losses(model) / len(micro_batches)
            scale(loss).backward()
        loss_sum += float(loss_part.detach())
    return loss_sum_reduce(loss_sum) / total, total


def _next_token_loss(loss_fn: TokenLossFn | None) -> BatchLossFn:
    def loss(model: nn.Module, batch: tuple) -> torch.Tensor:
        x, y, *seg = batch  # a third item: segment ids of packed documents (SFT)
        kwargs = {"segment_ids": seg[0]} if seg else {}
        head = plain_lm_head(model) if loss_fn is None else None
        if head is not None:  # the head and the loss in chunks: no [tokens, vocab] logits (chunked_ce.py)
            return linear_cross_entropy(model.hidden_states(x, **kwargs), head.weight, y)
        logits = model(x, **kwargs)
        return token_loss_sum(logits, y) if loss_fn is None else loss_fn(logits, x, y)

    return loss


def _is_sharded(model: nn.Module) -> bool:
    """FSDP2-managed, or holding DTensor parameters (tensor parallelism)."""
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed support
        return False
    return isinstance(model, FSDPModule) or any(isinstance(p, DTensor) for p in model.parameters())


def plain_lm_head(model: nn.Module) -> nn.Linear | None:
    """The LM head of an unwrapped lmforge Transformer whose logits are just hidden_states @ head.weight.T (no
    bias, soft-cap or MLM transform), else None: wrapped models (DDP, torch.compile, MTP, PEFT heads) go through
    their own forward and the plain cross-entropy. FSDP2 keeps the class but shards the weights, gathering them only
    in the root's forward, so an FSDP-managed model takes its forward too; so does a tensor-parallel one (its hidden
    states are sharded by sequence until the head's input gathers them)."""
    head = getattr(model, "lm_head", None)
    if not isinstance(model, Transformer) or type(head) is not nn.Linear or head.bias is not None:
        return None
    if _is_sharded(model):
        return None
    heads = model.config.heads
    return None if heads.mlm or heads.final_logit_softcap is not None else head


@dataclass
class StepResult:
    loss: float | None  # None: a rollout step that made no update (merge_results)
    grad_norm: float | None
    tokens: int
    skipped: bool  # True when the loss or the gradients were non-finite: no update happened
    overflow: bool = False  # fp16: the loss scaler found inf / NaN gradients, skipped the update and lowered the scale


def merge_results(results: Sequence[StepResult]) -> StepResult:
    """A step's figures from its updates (a rollout step makes several, or none): mean loss and grad norm, the
    units summed, skipped when any update was; with no update, loss and grad norm are None."""
    if len(results) == 1:
        return results[0]
    if not results:
        return StepResult(loss=None, grad_norm=None, tokens=0, skipped=False)
    n = len(results)
    return StepResult(loss=sum(r.loss for r in results) / n, grad_norm=sum(r.grad_norm for r in results) / n,
                      tokens=sum(r.tokens for r in results), skipped=any(r.skipped for r in results),
                      overflow=any(r.overflow for r in results))


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: float, tokens: int,
                   grad_clip: float, scaler: torch.amp.GradScaler | None = None,
                   clip: Callable[[list[torch.Tensor], float], float] | None = None) -> StepResult:
    """Clip, check finiteness, update (or skip), and zero the gradients. clip(params, max_norm) -> norm replaces
    torch's clip_grad_norm_ (a layout whose gradients span meshes and pipeline stages: parallel/grad_norm.py).

    With fp16 loss scaling an inf gradient is the scaler's normal overflow signal: it skips the update and
    lowers the scale itself (StepResult.overflow: read as a drop of the scale, one sync per step); only a non-finite
    loss counts as a fault then.
    """
    # the optimizer's parameters: with bf16 master weights (master_weights.py) the gradients sit on the fp32 masters
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip is not None:
        grad_norm = clip(params, grad_clip if grad_clip > 0 else float("inf"))
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP2
    bad = not math.isfinite(loss) or (scaler is None and not math.isfinite(grad_norm))
    overflow = False
    if scaler is not None:
        if bad:
            scaler.update()  # records nothing new; the step is skipped below
        else:
            scale = scaler.get_scale()
            scaler.step(optimizer)  # skips optimizer.step() when the unscaled gradients hold inf / NaN
            scaler.update()  # ... and then halves the scale (backoff_factor): the only public sign of the skip
            overflow = scaler.get_scale() < scale
    elif not bad:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=loss, grad_norm=grad_norm, tokens=tokens, skipped=bad, overflow=overflow)
