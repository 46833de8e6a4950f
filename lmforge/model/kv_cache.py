"""A preallocated key/value cache for autoregressive decoding (gpt-fast style: one tensor, written in place).

All sequences of a batch share one write offset; variable prompt lengths are handled by left padding and the
attention mask the caller passes, so the cache itself stays a plain pair of tensors.
"""

import torch

from lmforge.common.errors import LmforgeError


class CachePositions:
    """The bookkeeping every preallocated cache shares: how many positions are written, room left, rollback."""

    kind = "KV cache"

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0  # positions already written (the same for every layer after a forward pass)

    def check_room(self, n_new: int) -> None:
        if self.length + n_new > self.max_len:
            raise LmforgeError(
                f"{self.kind} full: {self.length} cached + {n_new} new tokens exceed its max_len {self.max_len}"
            )

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (speculative decoding rolls back rejected draft tokens)."""
        if not 0 <= length <= self.length:
            raise LmforgeError(f"cannot truncate a {self.kind} of length {self.length} to {length}")
        self.length = length


class KVCache(CachePositions):
    def __init__(self, n_layers: int, batch_size: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        super().__init__(max_len)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, H_kv, T, D] after the cached positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` [B'] of the batch, in that order (beam search: each beam continues a parent)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
