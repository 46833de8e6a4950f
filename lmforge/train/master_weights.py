"""bf16 training with fp32 master weights (Micikevicius et al. 2018, "Mixed Precision Training"): the model's
parameters hold bf16 copies that forward and backward run on, no autocast casts per op; each trainable one keeps
its fp32 master, which the optimizer steps (its moments in fp32 too) and then rounds back into the bf16 weight.
Gradients are summed into the master's fp32 .grad as each backward produces them, so accumulation stays fp32.
"""

from __future__ import annotations

import torch
from torch import nn


def trains_every_weight(model: nn.Module) -> bool:
    """Whether every floating-point parameter of `model` trains (what MasterWeights takes: not a frozen base)."""
    return all(p.requires_grad for p in model.parameters() if p.is_floating_point())


class MasterWeights:
    """Casts `model`'s floating-point parameters (all trainable: trains_every_weight) to `dtype` in place, buffers
    staying as they are, and keeps the original fp32 tensors: `masters[i]` is the fp32 leaf the optimizer steps
    for `params[i]`."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        if not trains_every_weight(model):
            raise ValueError("MasterWeights needs every floating-point parameter trainable (a frozen base: autocast)")
        self.model, self.dtype = model, dtype
        self.params: list[nn.Parameter] = []
        self.masters: list[nn.Parameter] = []
        self._hooks = []
        for p in dict.fromkeys(model.parameters()):  # a tied embedding / lm_head once
            if not p.is_floating_point() or p.dtype == dtype:
                continue
            full = p.data
            p.data = full.to(dtype)
            master = nn.Parameter(full)  # the original fp32 storage, not a copy
            self._hooks.append(p.register_post_accumulate_grad_hook(_move_grad_to(master)))
            self.params.append(p)
            self.masters.append(master)
        self._master_of = {id(p): m for p, m in zip(self.params, self.masters, strict=True)}

    def master_of(self, param: nn.Parameter) -> nn.Parameter:
        """The fp32 tensor the optimizer steps for `param` (the parameter itself when it has no master)."""
        return self._master_of.get(id(param), param)

    @torch.no_grad()
    def push(self) -> None:
        """Round every master into its bf16 weight (after each optimizer step)."""
        if self.params:
            torch._foreach_copy_(self.params, self.masters)

    def state_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A model state dict (name -> tensor, e.g. state.model_tensors) with each bf16 weight replaced by its
        fp32 master: what a checkpoint stores, so a resume restores the masters bit for bit."""
        by_ptr = {p.data_ptr(): m for p, m in zip(self.params, self.masters, strict=True)}
        return {name: by_ptr.get(t.data_ptr(), t).detach() for name, t in tensors.items()}

    @torch.no_grad()
    def load_(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the masters from a checkpoint's model tensors (names as state_tensors wrote them), then push."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        for p, master in zip(self.params, self.masters, strict=True):
            master.copy_(tensors[names[id(p)]])
        self.push()

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Give the model its fp32 parameters back (the masters' storage itself) and hand `optimizer` the model's
        parameters in place of the masters (their state moves along): plain fp32 training from here on."""
        for p, master in zip(self.params, self.masters, strict=True):
            p.data = master.data
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["params"] = [p if q is master else q for q in group["params"]]
                if master in optimizer.state:
                    optimizer.state[p] = optimizer.state.pop(master)
        for handle in self._hooks:
            handle.remove()
        self.params, self.masters, self._master_of = [], [], {}


def _move_grad_to(master: nn.Parameter):
    """A post-accumulate-grad hook: add the bf16 gradient into the master's fp32 .grad and free it."""

    def hook(param: torch.Tensor) -> None:
        if master.grad is None:
            master.grad = param.grad.to(master.dtype)
        else:
            master.grad.add_(param.grad)
        param.grad = None

    return hook
