"""Model-state bytes one rank actually holds (what `lmforge calc` predicts per ZeRO stage): parameters at the end of
the forward (ZeRO-2 keeps them gathered until backward, ZeRO-3 has resharded them), gradients at the optimizer
step, optimizer states after it. DTensors count their local shard; a tied weight counts once."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.common.lazy_types import loaded_class


def local_bytes(t: torch.Tensor) -> int:
    dtensor = loaded_class("torch.distributed.tensor", "DTensor")
    local = t.to_local() if dtensor is not None and isinstance(t, dtensor) else t
    return local.numel() * local.element_size()


def parameter_bytes(model: nn.Module) -> int:
    return sum(local_bytes(p) for p in model.parameters())  # parameters() yields a shared parameter once


def gradient_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(local_bytes(p.grad) for g in optimizer.param_groups for p in g["params"] if p.grad is not None)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The per-parameter state tensors (Adam's m and v), not the scalar step counters."""
    zero = loaded_class("torch.distributed.optim", "ZeroRedundancyOptimizer")
    inner = optimizer.optim if zero is not None and isinstance(optimizer, zero) else optimizer
    return sum(local_bytes(v) for state in inner.state.values() for v in state.values()
               if torch.is_tensor(v) and v.dim() > 0)


class ModelStateMeter:
    """Records the parameter bytes at the end of each forward of `model` (the largest seen) until closed."""

    def __init__(self, model: nn.Module) -> None:
        self.params = 0
        self._hook = model.register_forward_hook(self._after_forward)
        self._model = model

    def _after_forward(self, module, args, output) -> None:
        self.params = max(self.params, parameter_bytes(self._model))

    def close(self) -> None:
        self._hook.remove()


def model_state_record(parallel, meter: ModelStateMeter, grad_bytes: int, optimizer: torch.optim.Optimizer) -> dict:
    """The metrics record of the model-state bytes: the largest over the ranks (collective: every rank calls it)."""
    meter.close()
    figures = {"param_bytes": meter.params, "grad_bytes": grad_bytes, "optimizer_bytes": optimizer_bytes(optimizer)}
    layout = parallel.layout
    return {"kind": "model_states", **{k: int(parallel.max(v)) for k, v in figures.items()}, "zero": parallel.zero,
            "dp": parallel.dp_size, "tp": layout.tp if layout else 1, "pp": layout.pp if layout else 1}
