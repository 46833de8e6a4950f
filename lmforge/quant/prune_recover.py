"""A short recovery fine-tune after pruning (Wanda, Sun et al., 2023, section 5; SparseGPT's and LLM-Pruner's
"recovery" step): a few hundred next-token steps on the calibration text with AdamW, the pruning masks re-applied
after every step so the zeros stay zeros. A plain loop on purpose: `quant` sits below `train` in the layers.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError


def recover(model: nn.Module, masks: dict[str, torch.Tensor], windows: torch.Tensor, steps: int, lr: float = 1e-4,
            batch_size: int = 8, log: Callable[[str], None] | None = None) -> list[float]:
    """Fine-tune a pruned causal LM on `windows` [n, T] for `steps` steps; returns the loss of each step."""
    if not model.config.attention.causal:
        raise LmforgeError("the recovery fine-tune trains next-token prediction: it needs a causal LM, "
                           "not an encoder")
    if windows.shape[1] < 2:
        raise LmforgeError("the recovery fine-tune needs calibration windows of at least 2 tokens")
    params = [p for p in model.parameters() if p.is_floating_point()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = params[0].device
    weights = {name: model.get_submodule(name).weight for name in masks}
    losses = []
    model.train()
    try:
        for step in range(steps):
            rows = torch.arange(step * batch_size, (step + 1) * batch_size) % windows.shape[0]
            batch = windows[rows].to(device)
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for name, weight in weights.items():
                    weight.mul_(masks[name])
            losses.append(float(loss.detach()))
            if log is not None and (step + 1) % max(steps // 5, 1) == 0:
                log(f"recovery step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    finally:
        model.eval()
        for p, flag in zip(params, was, strict=True):
            p.requires_grad_(flag)
    return losses
