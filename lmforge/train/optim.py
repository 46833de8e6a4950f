"""AdamW (Loshchilov & Hutter 2019, decoupled weight decay) with the usual two parameter groups: matrices
decay; norms, biases and embeddings do not (decaying them only pulls useful scales and rare tokens to zero).
"""

from __future__ import annotations

import torch
from torch import nn


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
                    eps: float) -> torch.optim.AdamW:
    decay, no_decay = split_decay_params(model)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
