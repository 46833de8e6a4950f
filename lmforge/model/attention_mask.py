"""Boolean attention masks for sliding-window (Beltagy et al., 2020 "Longformer"; Mistral 7B) and bidirectional
(encoder, BERT) attention, with padding, over cached + new positions.

A query at index q sees key k when k <= q (causal) and q - k < window: `window` keys including itself, as
transformers' `sliding_window_overlay` (kv_idx > q_idx - window). Encoders see |q - k| < window both ways.
"""

import torch

from lmforge.common.errors import LmforgeError


def build_window_mask(attention_mask: torch.Tensor | None, start: int, T: int, device, causal: bool = True,
                      window: int | None = None) -> torch.Tensor | None:
    """Bool mask [B or 1, 1, T, S] for queries at cache indices [start, start+T), or None when nothing is masked.

    attention_mask is the [B, S] key mask (1 = token, 0 = padding). A padded query row that would see no key at all
    is allowed to see itself, so padding never produces NaNs.
    """
    S = start + T
    if attention_mask is not None and attention_mask.shape[-1] != S:
        raise LmforgeError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected {S} "
                           f"({start} cached + {T} new)")
    padded = attention_mask is not None and not bool(attention_mask.all())
    rel = torch.arange(start, S, device=device)[:, None] - torch.arange(S, device=device)[None, :]  # q - k, [T, S]
    allowed = rel >= 0 if causal else torch.ones_like(rel, dtype=torch.bool)
    if window is not None:
        allowed = allowed & ((rel < window) if causal else (rel.abs() < window))
    if not padded:
        if not causal and window is None:
            return None
        return allowed[None, None]
    allowed = allowed[None] & attention_mask[:, None, :].bool()  # [B, T, S]
    allowed = allowed | (rel == 0)[None]
    return allowed[:, None]


def build_attention_mask(attention_mask: torch.Tensor | None, start: int, T: int, device):
    """(bool mask [B or 1, 1, T, S] or None, is_causal) for queries at positions [start, start+T).

    attention_mask is the Hugging Face-style key mask [B, S] (1 = real token, 0 = padding) covering the cached
    and the new tokens. Without padding we let SDPA use its causal fast path; a padded query row that would see
    no key at all is allowed to see itself, so padding never produces NaNs.
    """
    S = start + T
    if attention_mask is not None and attention_mask.shape[-1] != S:
        raise LmforgeError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected {S} "
                           f"({start} cached + {T} new)")
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (start == 0 or T == 1):
        return None, start == 0 and T > 1
    key_pos = torch.arange(S, device=device)
    query_pos = torch.arange(start, S, device=device)
    allowed = key_pos[None, :] <= query_pos[:, None]  # [T, S] causal
    if padded:
        allowed = allowed[None] & attention_mask[:, None, :].bool()  # [B, T, S]
        allowed = allowed | (key_pos[None, :] == query_pos[:, None])[None]
    else:
        allowed = allowed[None]
    return allowed[:, None], False
