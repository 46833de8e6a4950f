"""Paged attention on CPU: the KV cache as one pool of fixed-size blocks, read through each sequence's block table.

The engine packs the new tokens of every scheduled sequence into one row [1, N] (no padding in the MLPs). Each
layer writes its new cache entries into the slots the block tables name, then attends. All rows go to the C++
kernel of `lmforge.kernels`, which reads every sequence's blocks in place (decoding rows one by one, prompt chunks in
tiles of consecutive tokens). Where it does not apply (no compiler, MLA, other dtypes or head widths), decoding
sequences (one new token each) attend in a few batched calls over their gathered entries, grouped by length so that
little is padded, and prompt chunks one by one, causally, with SDPA. The pool holds keys and values (MHA/GQA/MQA)
or, for MLA, only the latent and the shared RoPE key. The model calls `attend` / `attend_latent` from its attention
layers (the `paged` protocol), so the model code stays the same.

Layout: each pool is [layers, heads, slots, width], head-major (MLA's entries have one "head"), so that gathering
whole blocks gives [heads, sequences, length, width] and the decode matmuls run on it without a copy.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.kernels.cpu_kernels import cpu_ops

# A decode group costs ~8 extra ops per layer; in blocks read (one block = block_size tokens of keys and values) that
# is about this many. Length groups are formed only where the padding they save is worth more.
GROUP_OVERHEAD_BLOCKS = 48

# Prompt chunks reach the C++ kernel in tiles of this many consecutive tokens: each block is converted to float32
# once per tile (and KV head) and used by all its rows.
KERNEL_TILE_ROWS = 8


def group_by_length(lengths: list[int], overhead: int | None = None) -> list[list[int]]:
    """Split rows into groups of similar length, minimising sum(rows * longest) + overhead per group.

    lengths: blocks per row. Returns row indices per group (exact dynamic programme over the sorted rows)."""
    overhead = GROUP_OVERHEAD_BLOCKS if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@dataclass
class _DecodeGroup:  # decoding sequences attended together
    index: torch.Tensor  # [rows] their positions in the packed tokens
    blocks: torch.Tensor  # [rows * n_blocks] block ids, row-major, padded with block 0
    keep: torch.Tensor  # [rows, 1, 1, n_blocks * block_size] bool: which gathered entries are real
    bias: torch.Tensor  # [1, rows, 1, n_blocks * block_size] float: 0 where kept, -inf elsewhere


@dataclass
class _Tiles:  # the C++ kernel's work: runs of consecutive query tokens of one sequence
    first: torch.Tensor  # [tiles] packed index of each tile's first token
    rows: torch.Tensor  # [tiles] its number of tokens
    lengths: torch.Tensor  # [tiles] entries its first token attends to (itself included); row j sees j more
    tables: torch.Tensor  # [tiles, max blocks] its sequence's block table, padded with block 0


@dataclass
class _Chunk:  # one sequence's share of the packed step
    offset: int  # first index in the packed tokens
    start: int  # position of its first new token
    num_tokens: int
    key_slots: torch.Tensor  # [start + num_tokens] cache slots of every entry it attends to


class PagedKVCache:
    paged = True  # tells the model to hand attention to this cache

    def __init__(self, n_layers: int, num_blocks: int, block_size: int, entry_shapes: dict[str, tuple[int, ...]],
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", kernel: bool = True):
        """entry_shapes: what one token stores per layer, e.g. {"k": (H_kv, D), "v": (H_kv, D)} or MLA's
        {"latent": (kv_lora_rank,), "k_rope": (qk_rope_head_dim,)}. kernel: let all rows attend through the
        C++ kernel of `lmforge.kernels` where it applies (CPU, float32/bfloat16 keys and values, head width a
        multiple of 16) and builds; False keeps the pure-PyTorch path."""
        self.block_size = block_size
        heads = {name: shape[0] if len(shape) == 2 else 1 for name, shape in entry_shapes.items()}
        self.pools = {name: torch.zeros((n_layers, heads[name], num_blocks * block_size, shape[-1]), dtype=dtype,
                                        device=device)
                      for name, shape in entry_shapes.items()}
        self._slots = None
        self._decode: list[_DecodeGroup] = []
        self._tiles: _Tiles | None = None
        self._ops = None  # torch.ops.lmforge when its kernels serve this cache
        if kernel and "k" in entry_shapes and entry_shapes["k"][-1] % 16 == 0 and \
                torch.device(device).type == "cpu" and dtype in (torch.float32, torch.bfloat16):
            self._ops = cpu_ops()
        self._chunks: list[_Chunk] = []
        self._gathered: dict[str, torch.Tensor] = {}  # reused decode gather buffers, one per pool (see _gather_blocks)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate whole blocks (src -> dst) in every layer."""
        bs = self.block_size
        for src, dst in pairs:
            for pool in self.pools.values():
                pool[:, :, dst * bs:(dst + 1) * bs] = pool[:, :, src * bs:(src + 1) * bs]

    def _slots_of(self, block_table: list[int], start: int, end: int) -> list[int]:
        """Pool slots of positions start..end-1."""
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def prepare(self, items: list[tuple[list[int], int, int]]) -> None:
        """Set up one step from (block_table, start, num_tokens) per sequence, in packed order."""
        device = next(iter(self.pools.values())).device
        new_slots = [slot for table, start, n in items for slot in self._slots_of(table, start, start + n)]
        self._slots = torch.tensor(new_slots, dtype=torch.long, device=device)  # where the new entries go
        self._decode, self._chunks, self._tiles = [], [], None
        if self._ops is not None:
            self._tiles = self._kernel_tiles(items, device)
            return
        decode_rows, offset = [], 0
        for block_table, start, n in items:
            if n == 1:
                decode_rows.append((offset, start, block_table))
            else:
                key_slots = torch.tensor(self._slots_of(block_table, 0, start + n), device=device)
                self._chunks.append(_Chunk(offset, start, n, key_slots))
            offset += n
        bs = self.block_size
        for group in group_by_length([start // bs + 1 for _, start, _ in decode_rows]):
            rows = [decode_rows[i] for i in group]
            n_blocks = max(start // bs + 1 for _, start, _ in rows)
            blocks = torch.zeros(len(rows), n_blocks, dtype=torch.long)
            keep = torch.zeros(len(rows), n_blocks * bs, dtype=torch.bool)
            for row, (_, start, block_table) in enumerate(rows):
                used = start // bs + 1
                blocks[row, :used] = torch.tensor(block_table[:used], dtype=torch.long)
                keep[row, :start + 1] = True
            bias = torch.zeros(keep.shape).masked_fill_(~keep, float("-inf"))
            index = torch.tensor([offset for offset, _, _ in rows], dtype=torch.long)
            self._decode.append(_DecodeGroup(index.to(device), blocks.flatten().to(device),
                                             keep[:, None, None, :].to(device), bias[None, :, None, :].to(device)))

    def _kernel_tiles(self, items: list[tuple[list[int], int, int]], device) -> _Tiles:
        """The kernel's work list: each decoding sequence is a tile of one row; prompt chunks are cut into tiles of
        up to KERNEL_TILE_ROWS rows."""
        bs, tiles, offset = self.block_size, [], 0
        for block_table, start, n in items:
            for j in range(0, n, KERNEL_TILE_ROWS):
                tiles.append((offset + j, min(KERNEL_TILE_ROWS, n - j), start + j + 1, block_table))
            offset += n
        used = [-(-(length + rows - 1) // bs) for _, rows, length, _ in tiles]  # blocks each tile reads
        width = max(used)
        tables = [table[:u] + [0] * (width - u) for (_, _, _, table), u in zip(tiles, used, strict=True)]
        first, rows, lengths, _ = zip(*tiles, strict=True)
        return _Tiles(*(torch.tensor(x, dtype=torch.long, device=device) for x in (first, rows, lengths, tables)))

    def _gather_blocks(self, name: str, layer: int, blocks: torch.Tensor, rows: int) -> torch.Tensor:
        """Whole blocks [rows * n_blocks] of one layer's pool -> [heads, rows, n_blocks * block_size, width].

        Contiguous per head, so the decode matmuls read it without a copy (strided, they measured 3x slower).
        Written into a buffer kept across layers and steps: a fresh multi-MB tensor per call is mmapped and
        page-faulted anew by the allocator, which measured up to 25x slower than the copy itself."""
        pool = self.pools[name][layer]  # [heads, slots, width]
        heads, width = pool.shape[0], pool.shape[-1]
        by_block = pool.view(heads, -1, self.block_size, width)
        size = heads * len(blocks) * self.block_size * width
        buffer = self._gathered.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._gathered[name] = pool.new_empty(size)
        out = buffer[:size].view(heads, len(blocks), self.block_size, width)
        for h in range(heads):  # along dim 0 index_select copies whole blocks; along dim 1 it is 3-4x slower
            torch.index_select(by_block[h], 0, blocks, out=out[h])
        return out.view(heads, rows, -1, width)

    def _write(self, layer: int, **entries: torch.Tensor) -> None:
        for name, value in entries.items():  # value [heads, N, width] in packed order
            pool = self.pools[name][layer]
            pool[:, self._slots] = value.to(pool.dtype)

    def _chunk_mask(self, c: _Chunk, device) -> tuple[torch.Tensor | None, bool]:
        if c.start == 0:
            return None, True
        key_pos = torch.arange(c.start + c.num_tokens, device=device)
        return key_pos[None, :] <= key_pos[c.start:, None], False

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float | None = None) -> torch.Tensor:
        """Write k/v [1, H_kv, N, D], then the attention output [1, H, N, D] for queries q [1, H, N, D]."""
        k_pool, v_pool = self.pools["k"][layer], self.pools["v"][layer]  # [H_kv, slots, D]
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        if self._tiles is not None:  # the C++ kernels: every sequence's blocks are read in place
            self._ops.write_kv(k_pool, v_pool, k[0], v[0], self._slots)
            # out [1, N, H, D] seen as [1, H, N, D]: the o_proj input [1, N, H * D] is then a view, not a copy
            out = q.new_empty((1, q.shape[2], q.shape[1], q.shape[3])).transpose(1, 2)
            t = self._tiles
            self._ops.paged_attention(q[0], k_pool, v_pool, t.first, t.rows, t.tables, t.lengths, self.block_size,
                                      scale, out[0])
            return out
        self._write(layer, k=k[0], v=v[0])
        out = torch.empty_like(q)
        gqa = q.shape[1] != k.shape[1]
        H, H_kv = q.shape[1], k.shape[1]
        for g in self._decode:
            # The query heads sharing a KV head become that head's G "query positions" (the mask is per key), so
            # each key is read once per group. Plain matmuls with the softmax in float: on CPU 2.6x faster than
            # SDPA's flash kernel for these few-row queries in bf16, as fast in fp32.
            Bd = len(g.index)
            qd = q[0, :, g.index].view(H_kv, H // H_kv, Bd, -1).transpose(1, 2)  # [H_kv, Bd, G, D]
            kd, vd = (self._gather_blocks(name, layer, g.blocks, Bd) for name in ("k", "v"))  # [H_kv, Bd, L, D]
            scores = torch.matmul(qd, kd.transpose(-1, -2)).float().mul_(scale).add_(g.bias)
            yd = torch.matmul(scores.softmax(-1).to(vd.dtype), vd)  # [H_kv, Bd, G, D]
            out[0, :, g.index] = yd.transpose(1, 2).reshape(H, Bd, -1)
        for c in self._chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            if c.start == 0:  # a prompt with nothing cached sees only its own new keys: no gather needed
                kc, vc = k[:, :, sl], v[:, :, sl]
            else:
                kc, vc = k_pool[:, c.key_slots][None], v_pool[:, c.key_slots][None]  # [1, H_kv, start + n, D]
            mask, causal = self._chunk_mask(c, q.device)
            out[:, :, sl] = F.scaled_dot_product_attention(q[:, :, sl], kc, vc, attn_mask=mask, is_causal=causal,
                                                           scale=scale, enable_gqa=gqa)
        return out

    def attend_latent(self, layer: int, q_nope: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                      k_rope: torch.Tensor, decode_fn: Callable, prefill_fn: Callable) -> torch.Tensor:
        """MLA: write latent [1, N, r] and k_rope [1, N, d_rope]; queries [1, H, N, ·] -> output [1, H, N, v].
        decode_fn / prefill_fn(q_nope, q_rope, latent, k_rope, mask, is_causal) are the model's attention paths."""
        self._write(layer, latent=latent, k_rope=k_rope)  # [1, N, ·]: the pools' single "head"
        lat_pool, rope_pool = self.pools["latent"][layer], self.pools["k_rope"][layer]  # [1, slots, ·]
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []  # (packed indices, output [H, n, v])
        for g in self._decode:
            qn, qr = (t[0, :, g.index].unsqueeze(2).transpose(0, 1) for t in (q_nope, q_rope))  # [Bd, H, 1, ·]
            lat, rope = (self._gather_blocks(name, layer, g.blocks, len(g.index))[0] for name in ("latent", "k_rope"))
            yd = decode_fn(qn, qr, lat, rope, g.keep, False)  # [Bd, H, 1, v]
            pieces.append((g.index, yd.squeeze(2).transpose(0, 1)))
        for c in self._chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            mask, causal = self._chunk_mask(c, q_nope.device)
            yc = prefill_fn(q_nope[:, :, sl], q_rope[:, :, sl], lat_pool[:, c.key_slots], rope_pool[:, c.key_slots],
                            mask, causal)
            pieces.append((torch.arange(sl.start, sl.stop, device=q_nope.device), yc[0]))
        out = q_nope.new_empty((1, q_nope.shape[1], q_nope.shape[2], pieces[0][1].shape[-1]))
        for index, y in pieces:
            out[0, :, index] = y
        return out
