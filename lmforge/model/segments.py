"""Packed sequences (several documents in one row, e.g. SFT packing): a block-diagonal "document mask" so a token
attends only within its own segment, and positions that restart at 0 at each segment start, so a packed forward
computes exactly what each document's own forward would (Krell et al., 2021, "Efficient Sequence Packing").
"""

import torch

from lmforge.common.errors import LmforgeError


def check_segment_ids(segment_ids: torch.Tensor, input_ids: torch.Tensor, attention_mask, kv_cache) -> None:
    if kv_cache is not None:
        raise LmforgeError("segment_ids (packed documents) work only without a KV cache: pack for training, "
                           "decode each sequence with its own cache")
    if attention_mask is not None:
        raise LmforgeError("pass either segment_ids or attention_mask, not both (give padding its own segment id)")
    if segment_ids.shape != input_ids.shape:
        raise LmforgeError(f"segment_ids has shape {tuple(segment_ids.shape)}, expected the input_ids shape "
                           f"{tuple(input_ids.shape)}")


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] positions counted from each segment's first token (segments are contiguous runs of one id)."""
    T = segment_ids.shape[-1]
    idx = torch.arange(T, device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=-1).values  # index of the segment start
    return idx - first


def build_segment_mask(segment_ids: torch.Tensor, causal: bool = True, window: int | None = None) -> torch.Tensor:
    """Bool mask [B, 1, T, T] (True = may attend): same segment, key not after the query when causal, and within
    the sliding window when one is given. Every query sees itself, so no row is empty."""
    T = segment_ids.shape[-1]
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T(query), T(key)]
    rel = torch.arange(T, device=segment_ids.device)[:, None] - torch.arange(T, device=segment_ids.device)[None, :]
    if causal:
        allowed = allowed & (rel >= 0)[None]
    if window is not None:
        allowed = allowed & ((rel < window) if causal else (rel.abs() < window))[None]
    return allowed[:, None]
