"""NEFTune (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"): during training only,
add uniform noise in [-m, m] with m = alpha / sqrt(L * d) to the input embeddings (L the sequence length, d the
model width), through a forward hook on the embedding that is removed when the context ends.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn


def neftune_hook(alpha: float):
    def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        magnitude = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        return output + torch.empty_like(output).uniform_(-magnitude, magnitude)
    return hook


@contextlib.contextmanager
def neftune(embedding: nn.Module, alpha: float | None) -> Iterator[None]:
    """Noisy embeddings inside the block (in train mode); alpha None or 0 leaves the model untouched."""
    if not alpha:
        yield
        return
    handle = embedding.register_forward_hook(neftune_hook(alpha))
    try:
        yield
    finally:
        handle.remove()
