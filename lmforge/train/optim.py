"""AdamW (Loshchilov & Hutter 2019, decoupled weight decay) with the usual two parameter groups: matrices
decay; norms, biases and embeddings do not (decaying them only pulls useful scales and rare tokens to zero).
With bf16 master weights (master_weights.py) the optimizer steps the fp32 masters and rounds them into the model.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.train.master_weights import MasterWeights


def split_decay_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): weights of >= 2 dims outside embeddings decay; everything else does not.
    A tied lm_head is the embedding's own parameter and so is not decayed either."""
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float, masters: MasterWeights | None = None) -> torch.optim.AdamW:
    """AdamW over the model's parameters, or over their fp32 masters (each step then rounds them into the bf16
    weights). Torch's fused kernel where it applies (plain CPU / CUDA tensors): one pass per parameter instead of
    ~10 elementwise ones (CPU, 5.3M parameters: 26 ms a step vs 855 ms for the for-loop)."""
    decay, no_decay = split_decay_params(model)
    if masters is not None:
        decay, no_decay = [masters.master_of(p) for p in decay], [masters.master_of(p) for p in no_decay]
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    fused = all(_fusable(p) for p in decay + no_decay) or None
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    if masters is not None:
        optimizer.register_step_post_hook(lambda *_: masters.push())
    return optimizer


def _fusable(p: torch.Tensor) -> bool:
    """Whether torch's fused AdamW takes this parameter: a plain (not DTensor) float tensor on CPU or CUDA."""
    return type(p) in (nn.Parameter, torch.Tensor) and p.device.type in ("cpu", "cuda") and p.is_floating_point()
