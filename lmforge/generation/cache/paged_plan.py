"""The paged cache's per-step metadata (vLLM's attention metadata, nano-vllm's slot mapping): where each new token's
entries go, and how the attention backends split the work of one packed step.

Built once per step from (block_table, start, num_tokens) per sequence, in packed order, then read by every layer.
`plan_kernel` gives the C++ kernel its tiles; `plan_torch` groups decoding sequences by length (little padding,
few calls) and lists prompt chunks for SDPA.
"""

from dataclasses import dataclass

import torch

# A decode group costs ~8 extra ops per layer; in blocks read (one block = block_size tokens of keys and values) that
# is about this many. Length groups are formed only where the padding they save is worth more.
GROUP_OVERHEAD_BLOCKS = 48

# Prompt chunks reach the C++ kernel in tiles of this many consecutive tokens: each block is converted to float32
# once per tile (and KV head) and used by all its rows.
KERNEL_TILE_ROWS = 8

StepItems = list[tuple[list[int], int, int]]  # (block_table, start, num_tokens) per sequence, in packed order


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


def slots_of(block_table: list[int], start: int, end: int, block_size: int) -> list[int]:
    """Pool slots of positions start..end-1."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]


def slot_mapping(items: StepItems, block_size: int, device) -> torch.Tensor:
    """[N] the pool slot of every new token of the packed step."""
    slots = [slot for table, start, n in items for slot in slots_of(table, start, start + n, block_size)]
    return torch.tensor(slots, dtype=torch.long, device=device)


@dataclass
class DecodeGroup:  # decoding sequences attended together
    index: torch.Tensor  # [rows] their positions in the packed tokens
    blocks: torch.Tensor  # [rows * n_blocks] block ids, row-major, padded with block 0
    keep: torch.Tensor  # [rows, 1, 1, n_blocks * block_size] bool: which gathered entries are real
    bias: torch.Tensor  # [1, rows, 1, n_blocks * block_size] float: 0 where kept, -inf elsewhere


@dataclass
class Chunk:  # one prompt chunk (several new tokens of one sequence)
    offset: int  # first index in the packed tokens
    start: int  # position of its first new token
    num_tokens: int
    key_slots: torch.Tensor  # [start + num_tokens] cache slots of every entry it attends to

    def mask(self, device) -> tuple[torch.Tensor | None, bool]:
        """(mask, is_causal) of its queries over all its keys."""
        if self.start == 0:
            return None, True
        key_pos = torch.arange(self.start + self.num_tokens, device=device)
        return key_pos[None, :] <= key_pos[self.start:, None], False


@dataclass
class TorchPlan:  # the pure-PyTorch backend's work
    slots: torch.Tensor  # [N] where the new entries go
    decode: list[DecodeGroup]
    chunks: list[Chunk]


@dataclass
class Tiles:  # the C++ kernel's work: runs of consecutive query tokens of one sequence
    slots: torch.Tensor  # [N] where the new entries go
    first: torch.Tensor  # [tiles] packed index of each tile's first token
    rows: torch.Tensor  # [tiles] its number of tokens
    lengths: torch.Tensor  # [tiles] entries its first token attends to (itself included); row j sees j more
    tables: torch.Tensor  # [tiles, max blocks] its sequence's block table, padded with block 0


def plan_torch(items: StepItems, block_size: int, device) -> TorchPlan:
    """Decoding sequences (one new token each) in length groups; prompt chunks one by one."""
    bs = block_size
    decode_rows, chunks, offset = [], [], 0
    for block_table, start, n in items:
        if n == 1:
            decode_rows.append((offset, start, block_table))
        else:
            key_slots = torch.tensor(slots_of(block_table, 0, start + n, bs), device=device)
            chunks.append(Chunk(offset, start, n, key_slots))
        offset += n
    groups = []
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
        groups.append(DecodeGroup(index.to(device), blocks.flatten().to(device), keep[:, None, None, :].to(device),
                                  bias[None, :, None, :].to(device)))
    return TorchPlan(slot_mapping(items, bs, device), groups, chunks)


def plan_kernel(items: StepItems, block_size: int, device) -> Tiles:
    """Each decoding sequence is a tile of one row; prompt chunks are cut into tiles of up to KERNEL_TILE_ROWS rows."""
    bs, tiles, offset = block_size, [], 0
    for block_table, start, n in items:
        for j in range(0, n, KERNEL_TILE_ROWS):
            tiles.append((offset + j, min(KERNEL_TILE_ROWS, n - j), start + j + 1, block_table))
        offset += n
    used = [-(-(length + rows - 1) // bs) for _, rows, length, _ in tiles]  # blocks each tile reads
    width = max(used)
    tables = [table[:u] + [0] * (width - u) for (_, _, _, table), u in zip(tiles, used, strict=True)]
    first, rows, lengths, _ = zip(*tiles, strict=True)
    return Tiles(slot_mapping(items, bs, device),
                 *(torch.tensor(x, dtype=torch.long, device=device) for x in (first, rows, lengths, tables)))
