"""ALiBi positions (Press et al., 2022, "Train Short, Test Long: Attention with Linear Biases"): no position
vectors at all; each head h adds -m_h * (query position - key position) to its attention scores.

The slopes m_h form a geometric sequence 2^(-8/n), 2^(-16/n), ...; for a head count that is not a power of two the
paper (and BLOOM) take the 2^k closest below, then every other slope of the 2^(k+1) sequence. The bias is folded
into the float attention mask SDPA takes (with -inf where the boolean mask forbids a key), so every mask-taking
attention path (no cache, the contiguous KV cache) serves ALiBi models unchanged.
"""

import math

import torch


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The per-head slopes m_h [n_heads] (float32), as the paper's reference code and transformers' BLOOM."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))  # 2^(-8/closest)
    slopes = [base ** (i + 1) for i in range(closest)]
    if closest != n_heads:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))  # 2^(-8/(2 closest)): the odd powers of it
        slopes += [extra ** (2 * i + 1) for i in range(min(closest, n_heads - closest))]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """-m_h * (q - k) as float32 [B, H, T, S] for query positions [B, T] and key positions [B, S]."""
    distance = query_pos[:, None, :, None].float() - key_pos[:, None, None, :].float()
    return -slopes.to(query_pos.device)[None, :, None, None] * distance


def key_positions(attention_mask: torch.Tensor | None, query_pos: torch.Tensor, S: int) -> torch.Tensor:
    """Positions [B, S] of the cached + new keys: the queries' own when there is no cache (packed segments
    included), else counted over real tokens of the padding mask (as the queries' are), else 0..S-1."""
    if query_pos.shape[-1] == S:
        return query_pos
    if attention_mask is not None:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(S, device=query_pos.device).expand(query_pos.shape[0], S)


def alibi_mask(slopes: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, query_pos: torch.Tensor,
               attention_mask: torch.Tensor | None, S: int, dtype: torch.dtype) -> torch.Tensor:
    """The float mask [B, H, T, S] SDPA adds to the scores over S cached + new keys: the ALiBi bias where `mask`
    (bool, or the causal flag) allows a key, -inf elsewhere."""
    T = query_pos.shape[-1]
    bias = alibi_bias(slopes, query_pos, key_positions(attention_mask, query_pos, S))
    if is_causal:  # the first pass over a prompt without padding (S == T)
        mask = torch.ones(T, S, dtype=torch.bool, device=query_pos.device).tril(S - T)[None, None]
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
    return bias.to(dtype)
