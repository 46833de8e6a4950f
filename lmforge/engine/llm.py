"""The `LLM` facade over the serving engine: requests in, tokens out, with continuous batching and a paged cache.

`generate(prompts, ...)` runs a list of prompts to completion; the step-wise API (`add_request`, `step`, `abort`)
is what the HTTP server drives. Each step schedules sequences (scheduler), runs the model once over all their new
tokens (runner), samples one token for each sequence that reached its end, and retires finished sequences.
"""

from dataclasses import dataclass, field

import torch

from lmforge.common.errors import LmforgeError
from lmforge.engine.block_manager import BlockManager
from lmforge.engine.runner import ModelRunner, kv_bytes_per_token
from lmforge.engine.scheduler import Scheduler
from lmforge.engine.sequence import Sequence, Status


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: as many as kv_cache_gb holds
    kv_cache_gb: float = 1.0
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    chunked_prefill: bool = False

    def __post_init__(self):
        if self.block_size < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise LmforgeError("EngineConfig.block_size and num_blocks must be >= 1")
        if self.kv_cache_gb <= 0 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise LmforgeError("EngineConfig.kv_cache_gb, max_num_seqs and max_num_batched_tokens must be positive")


@dataclass
class RequestOutput:
    request_id: int
    prompt_ids: list[int]
    new_token_ids: list[int] = field(default_factory=list)  # tokens produced by the last step
    output_ids: list[int] = field(default_factory=list)  # all tokens so far
    finished: bool = False
    finish_reason: str | None = None


class LLM:
    def __init__(self, model, tokenizer=None, config: EngineConfig | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or EngineConfig()
        num_blocks = config.num_blocks or max(1, int(config.kv_cache_gb * 2**30 / kv_bytes_per_token(model)
                                                     / config.block_size))
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens,
                                   config.chunked_prefill)
        self.runner = ModelRunner(model, num_blocks, config.block_size)
        self.requests: dict[int, Sequence] = {}

    # -- step-wise API -----------------------------------------------------------------------------------------
    def add_request(self, prompt_ids: list[int], max_new_tokens: int = 16, stop_token_ids=()) -> int:
        if not prompt_ids:
            raise LmforgeError("the prompt is empty")
        limit = self.model.config.max_seq_len
        if len(prompt_ids) + max_new_tokens > limit:
            raise LmforgeError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                               f"the model's context of {limit} tokens")
        seq = Sequence(list(prompt_ids), max_new_tokens=max_new_tokens)
        seq.stop_token_ids = frozenset(stop_token_ids)
        self.requests[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq.seq_id

    def abort(self, request_id: int) -> None:
        seq = self.requests.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq, "abort")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[RequestOutput]:
        """Run one model step; outputs of the requests that produced a token or finished in it."""
        batch, failed = self.scheduler.schedule()
        outputs = [self._output(seq, []) for seq in failed]
        if not batch:
            return outputs
        logits = self.runner.run(batch, self.block_manager.pending_copies)
        self.block_manager.pending_copies = []
        sampling = [item.seq for item in batch if item.samples]
        tokens = logits.argmax(dim=-1).tolist()
        self.scheduler.postprocess(batch, {seq.seq_id: t for seq, t in zip(sampling, tokens, strict=True)})
        for seq, token in zip(sampling, tokens, strict=True):
            if token in seq.stop_token_ids:
                self.scheduler.finish(seq, "stop")
            elif len(seq.output_ids) >= seq.max_new_tokens:
                self.scheduler.finish(seq, "length")
            outputs.append(self._output(seq, [token]))
        return outputs

    def _output(self, seq: Sequence, new: list[int]) -> RequestOutput:
        if seq.status is Status.FINISHED:
            self.requests.pop(seq.seq_id, None)
        return RequestOutput(seq.seq_id, seq.prompt_ids, new, list(seq.output_ids), seq.is_finished,
                             seq.finish_reason)

    # -- offline API -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 16, stop_token_ids=()) -> list[RequestOutput]:
        ids = [self.add_request(p, max_new_tokens, stop_token_ids) for p in prompts]
        done: dict[int, RequestOutput] = {}
        while self.has_unfinished():
            for out in self.step():
                if out.finished:
                    done[out.request_id] = out
        return [done[i] for i in ids]
