"""What the reward model and the DPO family train on: preference pairs from a user's JSONL file or the embedded
generator, a train / held-out split, tokenized once; the resumable loader of epoch-shuffled mini-batches the
Trainer reads them with; and the validation of the settings both runs share.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.data.tasks.preferences import preference_pairs, read_preference_jsonl, split_pairs
from lmforge.train.post.pairs import EncodedPair, encode_pairs


def load_preference_data(tokenizer, data: str | None, train_pairs: int, heldout_pairs: int, task_seed: int,
                         max_len: int) -> tuple[list, list, list[EncodedPair], list[EncodedPair]]:
    """(train pairs, held-out pairs, their encodings): `data` is a JSONL file (split 80/20 by a hash of each
    pair, then capped at the requested counts), or None for the embedded preference task."""
    if tokenizer is None or tokenizer.chat_template is None:
        raise LmforgeError("preference training needs a tokenizer with a chat template (the model directory's "
                           "tokenizer.json and tokenizer_config.json)")
    if data is None:
        train = preference_pairs(train_pairs, "train", task_seed)
        heldout = preference_pairs(heldout_pairs, "heldout", task_seed)
    else:
        train, heldout = split_pairs(read_preference_jsonl(data))
        train, heldout = train[:train_pairs], heldout[:heldout_pairs]
    return train, heldout, encode_pairs(tokenizer, train, max_len), encode_pairs(tokenizer, heldout, max_len)


class PairLoader:
    """Mini-batches of pair indices for the Trainer (its loader protocol): each a 1-tuple of an int64 array, each
    epoch a fresh permutation seeded by (seed, epoch), the last partial batch dropped unless the data is smaller
    than one batch. state_dict / load_state_dict: the cursor, so a resumed run reads the same batches."""

    rank, world_size = 0, 1  # pair runs train in one process

    def __init__(self, n: int, batch_size: int, seed: int, seq_len: int) -> None:
        if n == 0:
            raise LmforgeError("no training pairs")
        self.n, self.batch_size, self.seed, self.seq_len = n, min(batch_size, n), seed, seq_len
        self.epoch = self.position = 0

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[tuple[np.ndarray]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        while self.position + self.batch_size <= self.n:
            self.position += self.batch_size
            yield (order[self.position - self.batch_size:self.position].astype(np.int64),)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n,
                "batch_size": self.batch_size, "rank": 0, "world_size": 1}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "n", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise LmforgeError(f"the checkpoint's pair loader has {key}={state.get(key)!r} but this run has "
                                   f"{getattr(self, key)!r}; resume with the same data and settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
