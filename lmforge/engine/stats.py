"""One snapshot of the serving engine's figures: queues, KV blocks, totals since start (`LLM.stats()`).

The server's /metrics and the web page's status line read this snapshot instead of reaching into the scheduler and
the block manager, so what they show is defined once, here. Taking it only reads counters and lengths: cheap
enough for every scrape, and safe from another thread (each field is one atomic read).
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EngineStats:
    requests_waiting: int  # queued, not yet admitted (or preempted, waiting to be recomputed)
    requests_running: int  # admitted: holding KV blocks, prefilling or decoding
    kv_blocks_total: int
    kv_blocks_free: int  # includes the free blocks that still hold a reusable prefix (kv_blocks_cached)
    kv_blocks_cached: int  # free blocks kept for prefix caching, evicted least-recently-freed first
    kv_block_size: int  # tokens per block
    max_request_tokens: int  # prompt + completion one request may hold
    preemptions_total: int  # sequences preempted for recompute since start
    steps_total: int  # engine steps that ran the model
    computed_tokens_total: int  # tokens run through the model (prefill chunks and decode)
    generated_tokens_total: int  # tokens sampled and handed to requests

    @property
    def kv_blocks_in_use(self) -> int:
        return self.kv_blocks_total - self.kv_blocks_free

    def as_dict(self) -> dict:
        return {**asdict(self), "kv_blocks_in_use": self.kv_blocks_in_use}
