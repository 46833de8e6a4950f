"""T5's relative position bias (Raffel et al., 2020; after Shaw et al., 2018): a learned scalar per head and
distance bucket, added to the attention scores instead of position vectors.

Distance key - query falls into one of num_buckets buckets: half of them exact for small distances, the other half
logarithmically spaced up to max_distance (everything farther shares the last). The encoder's buckets are
bidirectional (separate halves for keys before and after the query); the decoder's look only backwards.
"""

import math

import torch
from torch import nn


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Bucket ids for key - query distances (Mesh TensorFlow's `_relative_position_bucket`)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -relative_position.clamp(max=0)  # keys after the query (masked anyway) count as distance 0
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """bias [1, H, T, S] for queries at positions [start, start + T) over keys at [0, S)."""

    def __init__(self, num_buckets: int, max_distance: int, n_heads: int, bidirectional: bool):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, T: int, S: int, start: int = 0) -> torch.Tensor:
        device = self.embedding.weight.device
        query = torch.arange(start, start + T, device=device)[:, None]
        key = torch.arange(S, device=device)[None, :]
        buckets = relative_position_bucket(key - query, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1)[None]  # [T, S, H] -> [1, H, T, S]
