"""The paged KV cache's bookkeeping: fixed-size blocks, reference counts, prefix caching, copy-on-write.

As in vLLM's PagedAttention, a sequence's keys/values live in `block_size`-token blocks listed in its block table.
A full block whose keys/values have been computed is registered under a hash of its tokens (and of the images
whose visual tokens it holds: vLLM's mm_hash) chained with the previous block's hash, so a later request with the
same prefix reuses it (prefix caching). Freed blocks keep their contents and hash and are evicted
least-recently-freed first. Sequences forked for `n > 1` share blocks; writing into a shared block first copies it
(copy-on-write; the runner performs the queued copies).
"""

from collections import OrderedDict, deque
from dataclasses import dataclass

from lmforge.common.errors import LmforgeError
from lmforge.engine.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full and computed
    token_ids: tuple = ()  # Sequence.block_key: the token ids, then any images' (hash, first token)


def block_hash(prev_hash: int | None, token_ids) -> int:
    return hash((prev_hash, tuple(token_ids)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise LmforgeError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_uncached: deque[int] = deque(range(num_blocks))
        self.free_cached: OrderedDict[int, None] = OrderedDict()  # LRU order: first = evicted first
        self.hash_to_block: dict[int, int] = {}
        self.pending_copies: list[tuple[int, int]] = []  # (src, dst) copy-on-write copies for the runner

    @property
    def num_free(self) -> int:
        return len(self.free_uncached) + len(self.free_cached)

    # -- allocation ------------------------------------------------------------------------------------------
    def _take_free(self) -> int:
        if self.free_uncached:
            block_id = self.free_uncached.popleft()
        elif self.free_cached:
            block_id, _ = self.free_cached.popitem(last=False)
            block = self.blocks[block_id]
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
        else:
            raise LmforgeError("no free KV block (the scheduler should have checked)")
        block = self.blocks[block_id]
        block.ref_count, block.hash, block.token_ids = 1, None, ()
        return block_id

    def _release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
                self.free_cached[block_id] = None
            else:
                self.free_uncached.append(block_id)

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Ids of the cached blocks that hold this sequence's leading full blocks."""
        hits: list[int] = []
        if not self.enable_prefix_caching:
            return hits
        prev = None
        for index in range(len(seq) // self.block_size):
            tokens = seq.block_key(index, self.block_size)
            prev = block_hash(prev, tokens)
            block_id = self.hash_to_block.get(prev)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, seq: Sequence) -> bool:
        in_use = sum(1 for b in self._prefix_hits(seq) if self.blocks[b].ref_count > 0)
        return seq.num_blocks(self.block_size) - in_use <= self.num_free

    def num_cached_if_allocated(self, seq: Sequence) -> int:
        """How many leading tokens `allocate` would find in the prefix cache."""
        return min(len(self._prefix_hits(seq)) * self.block_size, len(seq) - 1)

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks."""
        if seq.block_table:
            raise LmforgeError(f"sequence {seq.seq_id} already has blocks")
        hits = self._prefix_hits(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_cached[block_id]
            block.ref_count += 1
        seq.block_table = hits + [self._take_free() for _ in range(seq.num_blocks(self.block_size) - len(hits))]
        seq.num_hashed_blocks = len(hits)
        # Keep at least one token to compute: its logits give the next token.
        seq.num_cached_tokens = min(len(hits) * self.block_size, len(seq) - 1)

    def deallocate(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):  # the tail goes first, so shared prefixes stay cached longer
            self._release(block_id)
        seq.block_table, seq.num_cached_tokens, seq.num_hashed_blocks = [], 0, 0

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let `child` share every block of `parent` (for n > 1 samples of one prompt)."""
        for block_id in parent.block_table:
            self.blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.num_cached_tokens, child.num_hashed_blocks = parent.num_cached_tokens, parent.num_hashed_blocks

    # -- decoding ----------------------------------------------------------------------------------------------
    def _slot_block(self, seq: Sequence) -> int:
        return (len(seq) - 1) // self.block_size

    def can_append(self, seq: Sequence) -> bool:
        """Whether the newest token of a running sequence has a writable slot or a free block for one."""
        index = self._slot_block(seq)
        if index < len(seq.block_table) and self.blocks[seq.block_table[index]].ref_count == 1:
            return True
        return self.num_free >= 1

    def append_slot(self, seq: Sequence) -> None:
        """Make the slot of the newest token writable: a fresh block at a block boundary, a copy of a shared one."""
        index = self._slot_block(seq)
        if index == len(seq.block_table):
            seq.block_table.append(self._take_free())
            return
        block_id = seq.block_table[index]
        if self.blocks[block_id].ref_count > 1:
            copy = self._take_free()
            self.pending_copies.append((block_id, copy))
            self._release(block_id)
            seq.block_table[index] = copy

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly computed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        full = min(seq.num_cached_tokens, len(seq)) // self.block_size
        prev = self.blocks[seq.block_table[seq.num_hashed_blocks - 1]].hash if seq.num_hashed_blocks else None
        for index in range(seq.num_hashed_blocks, full):
            block = self.blocks[seq.block_table[index]]
            tokens = seq.block_key(index, self.block_size)
            prev = block_hash(prev, tokens)
            if block.hash is None:
                block.hash, block.token_ids = prev, tokens
                self.hash_to_block.setdefault(prev, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, full)
