"""Paged attention on CPU: the KV cache as one pool of fixed-size blocks, read through each sequence's block table.

The engine packs the new tokens of every scheduled sequence into one row [1, N] (no padding in the MLPs). Each
layer writes its new cache entries into the slots the block tables name, then attends: decoding sequences (one new
token each) together in one batched call over their gathered, padded entries; prompt chunks one by one, causally.
The pool holds keys and values (MHA/GQA/MQA) or, for MLA, only the latent and the shared RoPE key. The model calls
`attend` / `attend_latent` from its attention layers (the `paged` protocol), so the model code stays the same.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class _Chunk:  # one sequence's share of the packed step
    offset: int  # first index in the packed tokens
    start: int  # position of its first new token
    num_tokens: int
    key_slots: torch.Tensor  # [start + num_tokens] cache slots of every entry it attends to


class PagedKVCache:
    paged = True  # tells the model to hand attention to this cache

    def __init__(self, n_layers: int, num_blocks: int, block_size: int, entry_shapes: dict[str, tuple[int, ...]],
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """entry_shapes: what one token stores per layer, e.g. {"k": (H_kv, D), "v": (H_kv, D)} or MLA's
        {"latent": (kv_lora_rank,), "k_rope": (qk_rope_head_dim,)}."""
        self.block_size = block_size
        self.pools = {name: torch.zeros((n_layers, num_blocks * block_size, *shape), dtype=dtype, device=device)
                      for name, shape in entry_shapes.items()}
        self._slots = None
        self._decode = None
        self._chunks: list[_Chunk] = []
        self._gathered: dict[str, torch.Tensor] = {}  # reused decode gather buffers, one per pool (see _gather_blocks)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate whole blocks (src -> dst) in every layer."""
        bs = self.block_size
        for src, dst in pairs:
            for pool in self.pools.values():
                pool[:, dst * bs:(dst + 1) * bs] = pool[:, src * bs:(src + 1) * bs]

    def _slots_of(self, block_table: list[int], end: int) -> torch.Tensor:
        pos = torch.arange(end)
        table = torch.tensor(block_table, dtype=torch.long)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def prepare(self, items: list[tuple[list[int], int, int]]) -> None:
        """Set up one step from (block_table, start, num_tokens) per sequence, in packed order."""
        device = next(iter(self.pools.values())).device
        slots, decode_rows, chunks, offset = [], [], [], 0
        for block_table, start, n in items:
            key_slots = self._slots_of(block_table, start + n)
            slots.append(key_slots[start:])
            if n == 1:
                decode_rows.append((offset, start, block_table))
            else:
                chunks.append(_Chunk(offset, start, n, key_slots))
            offset += n
        self._slots = torch.cat(slots).to(device)
        self._chunks = [_Chunk(c.offset, c.start, c.num_tokens, c.key_slots.to(device)) for c in chunks]
        self._decode = None
        if decode_rows:  # gathered by whole blocks: one contiguous copy per block, not one per token
            bs = self.block_size
            n_blocks = max(start // bs + 1 for _, start, _ in decode_rows)
            blocks = torch.zeros(len(decode_rows), n_blocks, dtype=torch.long)
            mask = torch.zeros(len(decode_rows), n_blocks * bs, dtype=torch.bool)
            for row, (_, start, block_table) in enumerate(decode_rows):
                used = start // bs + 1
                blocks[row, :used] = torch.tensor(block_table[:used], dtype=torch.long)
                mask[row, :start + 1] = True
            index = torch.tensor([offset for offset, _, _ in decode_rows], dtype=torch.long)
            self._decode = (index.to(device), blocks.flatten().to(device), mask[:, None, None, :].to(device))

    def _gather_blocks(self, name: str, layer: int, blocks: torch.Tensor, rows: int) -> torch.Tensor:
        """Whole blocks [rows * n_blocks] of one layer's pool -> [rows, n_blocks * block_size, ...].

        Written into a buffer kept across layers and steps: a fresh multi-MB tensor per call is mmapped and
        page-faulted anew by the allocator, which measured up to 25x slower than the copy itself."""
        pool = self.pools[name][layer]
        by_block = pool.view(-1, self.block_size, *pool.shape[1:])
        buffer = self._gathered.get(name)
        if buffer is None or buffer.shape[0] < len(blocks):
            buffer = self._gathered[name] = by_block.new_empty((len(blocks), *by_block.shape[1:]))
        out = torch.index_select(by_block, 0, blocks, out=buffer[:len(blocks)])
        return out.view(rows, -1, *pool.shape[1:])

    def _write(self, layer: int, **entries: torch.Tensor) -> None:
        for name, value in entries.items():  # value [N, ...] in packed order
            pool = self.pools[name][layer]
            pool[self._slots] = value.to(pool.dtype)

    def _chunk_mask(self, c: _Chunk, device) -> tuple[torch.Tensor | None, bool]:
        if c.start == 0:
            return None, True
        key_pos = torch.arange(c.start + c.num_tokens, device=device)
        return key_pos[None, :] <= key_pos[c.start:, None], False

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float | None = None) -> torch.Tensor:
        """Write k/v [1, H_kv, N, D], then the attention output [1, H, N, D] for queries q [1, H, N, D]."""
        self._write(layer, k=k[0].transpose(0, 1), v=v[0].transpose(0, 1))
        k_pool, v_pool = self.pools["k"][layer], self.pools["v"][layer]
        gqa = q.shape[1] != k.shape[1]
        out = torch.empty_like(q)
        if self._decode is not None:
            index, blocks, mask = self._decode
            # The query heads sharing a KV head become that head's G "query positions" (no causality between
            # them: the mask is per key), so each key is read once per group: 2.5x faster than enable_gqa here.
            Bd, H, H_kv = len(index), q.shape[1], k.shape[1]
            qd = q[0, :, index].transpose(0, 1).reshape(Bd, H_kv, H // H_kv, -1)  # [Bd, H_kv, G, D]
            kd, vd = (self._gather_blocks(name, layer, blocks, Bd).transpose(1, 2) for name in ("k", "v"))
            yd = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, scale=scale)  # [Bd, H_kv, G, D]
            out[0, :, index] = yd.reshape(Bd, H, -1).transpose(0, 1)
        for c in self._chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            if c.start == 0:  # a prompt with nothing cached sees only its own new keys: no gather needed
                kc, vc = k[:, :, sl], v[:, :, sl]
            else:
                kc = k_pool[c.key_slots].transpose(0, 1)[None]  # [1, H_kv, start + n, D]
                vc = v_pool[c.key_slots].transpose(0, 1)[None]
            qc = q[:, :, sl]
            mask, causal = self._chunk_mask(c, q.device)
            yc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, is_causal=causal, scale=scale,
                                                enable_gqa=gqa)
            out[:, :, sl] = yc
        return out

    def attend_latent(self, layer: int, q_nope: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                      k_rope: torch.Tensor, decode_fn: Callable, prefill_fn: Callable) -> torch.Tensor:
        """MLA: write latent [1, N, r] and k_rope [1, N, d_rope]; queries [1, H, N, ·] -> output [1, H, N, v].
        decode_fn / prefill_fn(q_nope, q_rope, latent, k_rope, mask, is_causal) are the model's attention paths."""
        self._write(layer, latent=latent[0], k_rope=k_rope[0])
        lat_pool, rope_pool = self.pools["latent"][layer], self.pools["k_rope"][layer]
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []  # (packed indices, output [H, n, v])
        if self._decode is not None:
            index, blocks, mask = self._decode
            qn, qr = (t[0, :, index].unsqueeze(2).transpose(0, 1) for t in (q_nope, q_rope))  # [Bd, H, 1, ·]
            latent, k_rope = (self._gather_blocks(name, layer, blocks, len(index)) for name in ("latent", "k_rope"))
            yd = decode_fn(qn, qr, latent, k_rope, mask, False)  # [Bd, H, 1, v]
            pieces.append((index, yd.squeeze(2).transpose(0, 1)))
        for c in self._chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            mask, causal = self._chunk_mask(c, q_nope.device)
            yc = prefill_fn(q_nope[:, :, sl], q_rope[:, :, sl], lat_pool[c.key_slots][None],
                            rope_pool[c.key_slots][None], mask, causal)
            pieces.append((torch.arange(sl.start, sl.stop, device=q_nope.device), yc[0]))
        out = q_nope.new_empty((1, q_nope.shape[1], q_nope.shape[2], pieces[0][1].shape[-1]))
        for index, y in pieces:
            out[0, :, index] = y
        return out
