"""Sentence embeddings from any lmforge model: the masked mean of the final hidden states over real tokens,
L2-normalised (mean pooling as in Sentence-BERT, Reimers & Gurevych, 2019), so cosine similarity is a dot product."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmforge.common.errors import LmforgeError


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, d] states and [B, T] mask (1 = token) -> [B, d] mean over the masked-in positions."""
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


@torch.inference_mode()
def embed_token_ids(model, sequences: Sequence[Sequence[int]], pad_id: int = 0, batch_size: int = 32,
                    normalize: bool = True) -> torch.Tensor:
    """[N, d] float32 embeddings of token-id sequences (right-padded in batches, padding masked out)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise LmforgeError("embed needs at least one text, and every text must give at least one token")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        if width > model.config.max_seq_len:
            raise LmforgeError(f"a text has {width} tokens, more than the model's context of "
                               f"{model.config.max_seq_len}")
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, :len(seq)] = 1
        ids, mask = ids.to(device), mask.to(device)
        pooled = mean_pool(model.hidden_states(ids, attention_mask=mask).float(), mask)
        out.append(F.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(out).cpu()
