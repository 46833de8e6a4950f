"""Paged attention on CPU: the KV cache as one pool of fixed-size blocks, read through each sequence's block table.

The engine packs the new tokens of every scheduled sequence into one row [1, N] (no padding in the MLPs). Each
layer writes its new keys/values into the slots the block tables name, then attends: decoding sequences (one new
token each) together in one batched SDPA over their gathered, padded keys; prompt chunks one by one, causally.
The model calls `attend` through its attention layers (the `paged` protocol), so the model code stays the same.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class _Chunk:  # one sequence's share of the packed step
    offset: int  # first index in the packed tokens
    start: int  # position of its first new token
    num_tokens: int
    key_slots: torch.Tensor  # [start + num_tokens] cache slots of every key it attends to


class PagedKVCache:
    paged = True  # tells the model to hand attention to `attend`

    def __init__(self, n_layers: int, num_blocks: int, block_size: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.block_size = block_size
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._slots = None
        self._decode = None
        self._chunks: list[_Chunk] = []

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate whole blocks (src -> dst) in every layer."""
        bs = self.block_size
        for src, dst in pairs:
            self.k[:, dst * bs:(dst + 1) * bs] = self.k[:, src * bs:(src + 1) * bs]
            self.v[:, dst * bs:(dst + 1) * bs] = self.v[:, src * bs:(src + 1) * bs]

    def _slots_of(self, block_table: list[int], start: int, end: int) -> torch.Tensor:
        pos = torch.arange(start, end)
        table = torch.tensor(block_table, dtype=torch.long)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def prepare(self, items: list[tuple[list[int], int, int]]) -> None:
        """Set up one step from (block_table, start, num_tokens) per sequence, in packed order."""
        device = self.k.device
        slots, decode_rows, chunks, offset = [], [], [], 0
        for block_table, start, n in items:
            key_slots = self._slots_of(block_table, 0, start + n)
            slots.append(key_slots[start:])
            (decode_rows if n == 1 else chunks).append(_Chunk(offset, start, n, key_slots))
            offset += n
        self._slots = torch.cat(slots).to(device)
        self._chunks = [_Chunk(c.offset, c.start, c.num_tokens, c.key_slots.to(device)) for c in chunks]
        self._decode = None
        if decode_rows:
            width = max(c.start + 1 for c in decode_rows)
            gather = torch.zeros(len(decode_rows), width, dtype=torch.long)
            mask = torch.zeros(len(decode_rows), width, dtype=torch.bool)
            for row, c in enumerate(decode_rows):
                gather[row, :c.start + 1] = c.key_slots
                mask[row, :c.start + 1] = True
            index = torch.tensor([c.offset for c in decode_rows], dtype=torch.long)
            self._decode = (index.to(device), gather.to(device), mask[:, None, None, :].to(device))

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float | None = None) -> torch.Tensor:
        """Write k/v [1, H_kv, N, D] to their slots, then attention output [1, H, N, D] for queries q [1, H, N, D]."""
        k_pool, v_pool = self.k[layer], self.v[layer]
        k_pool[self._slots] = k[0].transpose(0, 1).to(k_pool.dtype)
        v_pool[self._slots] = v[0].transpose(0, 1).to(v_pool.dtype)
        gqa = q.shape[1] != k.shape[1]
        out = torch.empty_like(q)
        if self._decode is not None:
            index, gather, mask = self._decode
            qd = q[0, :, index].unsqueeze(2).transpose(0, 1)  # [Bd, H, 1, D]
            kd = k_pool[gather].transpose(1, 2)  # [Bd, H_kv, S, D]
            vd = v_pool[gather].transpose(1, 2)
            yd = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, scale=scale, enable_gqa=gqa)
            out[0, :, index] = yd.squeeze(2).transpose(0, 1)
        for c in self._chunks:
            qc = q[:, :, c.offset:c.offset + c.num_tokens]
            kc = k_pool[c.key_slots].transpose(0, 1)[None]  # [1, H_kv, start + n, D]
            vc = v_pool[c.key_slots].transpose(0, 1)[None]
            if c.start == 0:
                yc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scale, enable_gqa=gqa)
            else:
                key_pos = torch.arange(c.start + c.num_tokens, device=q.device)
                allowed = key_pos[None, :] <= key_pos[c.start:, None]
                yc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=allowed, scale=scale, enable_gqa=gqa)
            out[:, :, c.offset:c.offset + c.num_tokens] = yc
        return out
