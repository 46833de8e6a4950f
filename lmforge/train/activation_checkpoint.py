"""Activation checkpointing (Chen et al. 2016) applied from outside the model: each block's forward is wrapped
in torch.utils.checkpoint, so its activations are recomputed in backward instead of stored. Parameter names
(and so checkpoints and exports) do not change.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module, blocks_attr: str = "layers") -> int:
    """Wrap every module of model.<blocks_attr> (a ModuleList of blocks); returns how many were wrapped."""
    blocks = getattr(model, blocks_attr)
    for block in blocks:
        if not getattr(block, "_lmforge_checkpointed", False):
            block.forward = functools.partial(_checkpointed, block.forward)
            block._lmforge_checkpointed = True
    return len(blocks)
