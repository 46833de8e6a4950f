"""A request as the serving engine sees it: its tokens, its KV blocks and its state (nano-vllm's `Sequence`).

The scheduler moves sequences between the waiting and running queues; the block manager fills `block_table`;
`num_cached_tokens` counts the leading tokens whose keys/values are already in the paged cache.
"""

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]
    params: Any = None  # the request's SamplingParams
    max_new_tokens: int = 16
    seq_id: int = field(default_factory=lambda: next(_ids))
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # leading tokens whose K/V are in the cache
    num_hashed_blocks: int = 0  # leading full blocks registered in the prefix cache
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    arrival: int = 0  # admission order, kept across preemption so a preempted request goes back first
    state: Any = None  # the engine's RequestState (text so far, stop rules)
    generator: Any = None  # the request's seeded torch.Generator, if it asked for a seed
    images: Any = None  # the prompt's encoded images (generation/images.py PromptImages), if it has any

    def __post_init__(self):
        if not self.prompt_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.prompt_ids = list(self.prompt_ids)
        if not self.token_ids:
            self.token_ids = list(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids):]

    @property
    def num_uncomputed(self) -> int:
        """Tokens the model still has to run over before this sequence can sample its next token."""
        return len(self.token_ids) - self.num_cached_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def num_blocks(self, block_size: int) -> int:
        return (len(self.token_ids) + block_size - 1) // block_size

    def block_tokens(self, index: int, block_size: int) -> list[int]:
        return self.token_ids[index * block_size:(index + 1) * block_size]

    def block_key(self, index: int, block_size: int) -> tuple:
        """What a full block's cached keys/values depend on: its token ids, and the content hash of each image whose
        visual tokens it holds (they all have the image token's id: ids alone would let two images share KV)."""
        tokens = tuple(self.block_tokens(index, block_size))
        if self.images is None:
            return tokens
        return tokens + self.images.in_range(index * block_size, (index + 1) * block_size)
