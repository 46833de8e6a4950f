"""A tiny greedy sampler for the sample generations during training (the train layer does not import the
engine): re-runs the model over the whole window for each new token — fine for a few dozen tokens.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def greedy_continue(model: nn.Module, ids: list[int], max_new_tokens: int, max_len: int,
                    stop_id: int | None = None) -> list[int]:
    """The greedy continuation of `ids` (new tokens only), stopping at `stop_id`."""
    device = next(model.parameters()).device
    seq = torch.tensor([ids], dtype=torch.long, device=device)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(seq[:, -max_len:])
        nxt = int(logits[0, -1].argmax())
        if nxt == stop_id:
            break
        out.append(nxt)
        seq = torch.cat([seq, seq.new_tensor([[nxt]])], dim=1)
    return out
