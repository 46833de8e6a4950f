"""Continuous batching: which sequences run in the next model step, and how many of their tokens.

Each step mixes running sequences (one new token each while decoding, or the next chunk of a long prompt) with
newly admitted ones, within a token budget (vLLM's "unified" scheduling; chunked prefill optional). A request is
admitted only when the block manager has room for it. When a running sequence needs a block and none is free,
the most recently admitted running sequence is preempted: its blocks are freed and it waits to be recomputed
(prefix caching usually makes that cheap). Nothing here asserts: a request that can never fit fails alone.
"""

from collections import deque
from dataclasses import dataclass

from lmforge.engine.block_manager import BlockManager
from lmforge.engine.sequence import Sequence, Status


@dataclass
class ScheduledSeq:
    seq: Sequence
    start: int  # first token position computed in this step
    num_tokens: int  # tokens computed in this step

    @property
    def samples(self) -> bool:
        """Whether this step reaches the sequence's last token, so its logits give a new token."""
        return self.start + self.num_tokens == len(self.seq)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 32, max_num_batched_tokens: int = 2048,
                 chunked_prefill: bool = False):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked_prefill = chunked_prefill
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._arrivals = 0

    def add(self, seq: Sequence) -> None:
        seq.arrival, self._arrivals = self._arrivals, self._arrivals + 1
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a sequence (stop, length, abort or error) and free its blocks."""
        if seq.status is Status.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status, seq.finish_reason = Status.FINISHED, reason

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = Status.WAITING
        self.num_preemptions += 1
        index = next((i for i, w in enumerate(self.waiting) if w.arrival > seq.arrival), len(self.waiting))
        self.waiting.insert(index, seq)

    def schedule(self) -> tuple[list[ScheduledSeq], list[Sequence]]:
        """(sequences to run this step, sequences that can never fit and were failed)."""
        batch: list[ScheduledSeq] = []
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if seq not in self.running:  # preempted below to make room for an older sequence
                continue
            while not self.block_manager.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            if seq not in self.running:
                continue
            n = seq.num_uncomputed
            if n > budget and not (self.chunked_prefill and budget > 0):
                continue  # a long prompt chunk waits for the next step
            n = min(n, budget)
            self.block_manager.append_slot(seq)
            batch.append(ScheduledSeq(seq, seq.num_cached_tokens, n))
            budget -= n
        failed: list[Sequence] = []
        admitted = 0
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                if not self.running and not batch and seq.num_blocks(self.block_manager.block_size) > \
                        self.block_manager.num_blocks:
                    self.waiting.popleft()
                    self.finish(seq, "error")
                    failed.append(seq)
                    continue
                break
            n = len(seq) - self.block_manager.num_cached_if_allocated(seq)
            if n > budget and admitted and not self.chunked_prefill:
                break  # an over-budget prompt is the only one admitted in its step, rather than never
            n = min(n, budget) if self.chunked_prefill else n
            self.block_manager.allocate(seq)
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            batch.append(ScheduledSeq(seq, seq.num_cached_tokens, n))
            budget -= n
            admitted += 1
        return batch, failed

    def postprocess(self, batch: list[ScheduledSeq], new_tokens: dict[int, int]) -> None:
        """Record what a step computed; append each sampled token (keyed by seq_id) to its sequence."""
        for item in batch:
            seq = item.seq
            seq.num_cached_tokens = item.start + item.num_tokens
            self.block_manager.commit(seq)
            if item.samples and seq.seq_id in new_tokens:
                seq.token_ids.append(new_tokens[seq.seq_id])
