"""Embedding resize for vocabulary expansion: grow (or shrink) the token embedding and the output head.

New rows start at the mean of the existing embeddings, which keeps the initial logits of the new tokens
close to the average token instead of random (Hewitt, 2021, "Initializing New Word Embeddings").
"""

import torch
from torch import nn

from lmforge.common.errors import LmforgeError


@torch.no_grad()
def _resized(weight: torch.Tensor, n: int) -> torch.Tensor:
    old = weight.shape[0]
    if n <= old:
        return weight[:n].clone()
    new_rows = weight.float().mean(dim=0, keepdim=True).expand(n - old, -1).to(weight.dtype)
    return torch.cat([weight, new_rows], dim=0)


def resize_token_embeddings(model: nn.Module, new_vocab_size: int) -> None:
    """Resize `model.embed` and `model.lm_head` in place to `new_vocab_size` rows and update `model.config`."""
    if not isinstance(new_vocab_size, int) or new_vocab_size <= 0:
        raise LmforgeError(f"new_vocab_size must be a positive integer, got {new_vocab_size!r}")
    cfg = model.config
    if new_vocab_size == cfg.vocab_size:
        return
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(cfg, name)
        if value is not None and value >= new_vocab_size:
            raise LmforgeError(f"cannot shrink the vocabulary to {new_vocab_size}: {name}={value} would be cut")
    model.embed.weight = nn.Parameter(_resized(model.embed.weight, new_vocab_size))
    model.embed.num_embeddings = new_vocab_size
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    else:
        model.lm_head.weight = nn.Parameter(_resized(model.lm_head.weight, new_vocab_size))
    if model.lm_head.bias is not None:  # BERT's decoder bias: new tokens start at the mean bias
        model.lm_head.bias = nn.Parameter(_resized(model.lm_head.bias[:, None], new_vocab_size)[:, 0])
    model.lm_head.out_features = new_vocab_size
    model.config = cfg.replace(vocab_size=new_vocab_size)
