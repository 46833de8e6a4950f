"""Attention backends over the paged cache's pools (paged.py), one step's metadata at a time (paged_plan.py).

`PagedKernelBackend`: the C++ kernels of `lmforge.kernels` write the new entries and read every sequence's blocks
in place (decoding rows one by one, prompt chunks in tiles of consecutive tokens). `PagedTorchBackend`: decoding
sequences attend in a few batched calls over their gathered blocks, grouped by length so that little is padded;
prompt chunks one by one, causally, with SDPA; MLA's latent pages go through the module's own attention paths.
Only the PyTorch path adds ALiBi biases (given `alibi_slopes`); the C++ kernel has none (paged.py never picks it then).
"""

import torch

from lmforge.generation.cache.paged_plan import Tiles, TorchPlan, plan_kernel, plan_torch
from lmforge.model.alibi import alibi_bias
from lmforge.model.attention_backend import AttentionBackend, sdpa


class PagedBackend(AttentionBackend):
    explicit_positions = True  # packed tokens of several sequences: the engine passes their positions
    needs_mask = False  # the plan says who sees what

    def __init__(self, pools: dict[str, torch.Tensor], block_size: int):
        self.pools, self.block_size = pools, block_size
        self.plan = None  # set by PagedKVCache.prepare before each step


class PagedKernelBackend(PagedBackend):
    planner = staticmethod(plan_kernel)

    def __init__(self, pools: dict[str, torch.Tensor], block_size: int, ops):
        super().__init__(pools, block_size)
        self.ops = ops  # torch.ops.lmforge

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        """Write k/v [1, H_kv, N, D], then the attention output [1, H, N, D] for queries q [1, H, N, D]."""
        t: Tiles = self.plan
        k_pool, v_pool = self.pools["k"][layer], self.pools["v"][layer]  # [H_kv, slots, D]
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        self.ops.write_kv(k_pool, v_pool, k[0], v[0], t.slots)
        # out [1, N, H, D] seen as [1, H, N, D]: the o_proj input [1, N, H * D] is then a view, not a copy
        out = q.new_empty((1, q.shape[2], q.shape[1], q.shape[3])).transpose(1, 2)
        self.ops.paged_attention(q[0], k_pool, v_pool, t.first, t.rows, t.tables, t.lengths, self.block_size,
                                 scale, out[0])
        return out


class PagedTorchBackend(PagedBackend):
    planner = staticmethod(plan_torch)

    def __init__(self, pools: dict[str, torch.Tensor], block_size: int, alibi_slopes: torch.Tensor | None = None):
        super().__init__(pools, block_size)
        self.alibi_slopes = alibi_slopes  # [H] float32: ALiBi biases added to the scores (else None)
        self._gathered: dict[str, torch.Tensor] = {}  # reused decode gather buffers, one per pool (see gather_blocks)

    def gather_blocks(self, name: str, layer: int, blocks: torch.Tensor, rows: int) -> torch.Tensor:
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

    def write(self, layer: int, **entries: torch.Tensor) -> None:
        for name, value in entries.items():  # value [heads, N, width] in packed order
            pool = self.pools[name][layer]
            pool[:, self.plan.slots] = value.to(pool.dtype)

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        """Write k/v [1, H_kv, N, D], then the attention output [1, H, N, D] for queries q [1, H, N, D]."""
        plan: TorchPlan = self.plan
        k_pool, v_pool = self.pools["k"][layer], self.pools["v"][layer]  # [H_kv, slots, D]
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        self.write(layer, k=k[0], v=v[0])
        out = torch.empty_like(q)
        H, H_kv = q.shape[1], k.shape[1]
        for g in plan.decode:
            # The query heads sharing a KV head become that head's G "query positions" (the mask is per key), so
            # each key is read once per group. Plain matmuls with the softmax in float: on CPU 2.6x faster than
            # SDPA's flash kernel for these few-row queries in bf16, as fast in fp32.
            Bd = len(g.index)
            qd = q[0, :, g.index].view(H_kv, H // H_kv, Bd, -1).transpose(1, 2)  # [H_kv, Bd, G, D]
            kd, vd = (self.gather_blocks(name, layer, g.blocks, Bd) for name in ("k", "v"))  # [H_kv, Bd, L, D]
            scores = torch.matmul(qd, kd.transpose(-1, -2)).float().mul_(scale).add_(g.bias)
            if self.alibi_slopes is not None:  # slope * key position: -slope * (q - k) up to a per-row constant
                key_pos = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.float32)
                scores.add_(self.alibi_slopes.to(scores.device).view(H_kv, 1, H // H_kv, 1) * key_pos)
            yd = torch.matmul(scores.softmax(-1).to(vd.dtype), vd)  # [H_kv, Bd, G, D]
            out[0, :, g.index] = yd.transpose(1, 2).reshape(H, Bd, -1)
        for c in plan.chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            if c.start == 0:  # a prompt with nothing cached sees only its own new keys: no gather needed
                kc, vc = k[:, :, sl], v[:, :, sl]
            else:
                kc, vc = k_pool[:, c.key_slots][None], v_pool[:, c.key_slots][None]  # [1, H_kv, start + n, D]
            chunk_mask, causal = c.mask(q.device)
            if self.alibi_slopes is not None:
                chunk_mask, causal = self.alibi_chunk_mask(c, chunk_mask, q.dtype, q.device), False
            out[:, :, sl] = sdpa(q[:, :, sl], kc, vc, chunk_mask, causal, scale)
        return out

    def alibi_chunk_mask(self, c, allowed: torch.Tensor | None, dtype, device) -> torch.Tensor:
        """[1, H, n, start + n] float mask of a prompt chunk: -slope * (q - k) where causal, -inf elsewhere."""
        S = c.start + c.num_tokens
        pos = torch.arange(S, device=device)
        bias = alibi_bias(self.alibi_slopes, pos[None, c.start:], pos[None])
        allowed = allowed if allowed is not None else pos[None, :] <= pos[c.start:, None]
        return bias.masked_fill(~allowed, float("-inf")).to(dtype)

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        """MLA: write latent [1, N, r] and k_rope [1, N, d_rope]; queries [1, H, N, ·] -> output [1, H, N, v]."""
        plan: TorchPlan = self.plan
        self.write(layer, latent=latent, k_rope=k_rope)  # [1, N, ·]: the pools' single "head"
        lat_pool, rope_pool = self.pools["latent"][layer], self.pools["k_rope"][layer]  # [1, slots, ·]
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []  # (packed indices, output [H, n, v])
        decode, prefill = mla.attention_path(decode=True), mla.attention_path(decode=False)
        for g in plan.decode:
            qn, qr = (t[0, :, g.index].unsqueeze(2).transpose(0, 1) for t in (q_nope, q_rope))  # [Bd, H, 1, ·]
            lat, rope = (self.gather_blocks(name, layer, g.blocks, len(g.index))[0] for name in ("latent", "k_rope"))
            yd = decode(qn, qr, lat, rope, g.keep, False)  # [Bd, H, 1, v]
            pieces.append((g.index, yd.squeeze(2).transpose(0, 1)))
        for c in plan.chunks:
            sl = slice(c.offset, c.offset + c.num_tokens)
            chunk_mask, causal = c.mask(q_nope.device)
            yc = prefill(q_nope[:, :, sl], q_rope[:, :, sl], lat_pool[:, c.key_slots], rope_pool[:, c.key_slots],
                         chunk_mask, causal)
            pieces.append((torch.arange(sl.start, sl.stop, device=q_nope.device), yc[0]))
        out = q_nope.new_empty((1, q_nope.shape[1], q_nope.shape[2], pieces[0][1].shape[-1]))
        for index, y in pieces:
            out[0, :, index] = y
        return out
