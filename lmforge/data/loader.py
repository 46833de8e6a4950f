"""Reads packed token shards (see pack.py) as (inputs, targets) batches for pretraining: memory-mapped,
shuffled per epoch with a seed, split across distributed ranks, with a `state_dict()` cursor that resumes
exactly where it stopped (the property torchtitan's stateful dataloader provides).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.data.pack import FORMAT, INDEX_FILE, SPLITS


class PackedLoader:
    """Iterate one epoch of (x, y) int64 arrays of shape (batch_size, seq_len) from the current cursor.

    Every rank computes the same seeded permutation of rows for an epoch and takes rows rank::world_size,
    truncated so that all ranks see the same number of batches. Only full batches are yielded.
    """

    def __init__(self, directory: str | Path, split: str = "train", batch_size: int = 8, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        directory = Path(directory)
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            raise LmforgeError(f"{str(directory)!r} holds no packed data ({INDEX_FILE} missing); run lmforge data pack")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise LmforgeError(f"{str(index_path)!r} has format {index.get('format')!r}; expected {FORMAT!r}")
        if split not in SPLITS:
            raise LmforgeError(f"split={split!r} is not allowed; use one of {SPLITS}")
        if batch_size < 1:
            raise LmforgeError(f"batch_size={batch_size} must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise LmforgeError(f"rank={rank} must be in [0, world_size={world_size})")
        self.seq_len, self.row_len = index["seq_len"], index["row_len"]
        self.batch_size, self.rank, self.world_size, self.shuffle, self.seed = (
            batch_size, rank, world_size, shuffle, seed)
        dtype = np.dtype(index["dtype"])
        self._shards = [np.memmap(directory / s["file"], dtype=dtype, mode="r").reshape(s["rows"], self.row_len)
                        for s in index["splits"][split]["shards"]]
        self._starts = np.cumsum([0] + [len(s) for s in self._shards])
        self.rows = int(self._starts[-1])
        self.epoch = 0
        self.position = 0  # rows of this rank's epoch order already consumed

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return (self.rows // self.world_size) // self.batch_size

    def epoch_rows(self) -> np.ndarray:
        """Row indices this rank reads in the current epoch, in order."""
        rows = np.arange(self.rows)
        if self.shuffle:
            rows = np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)
        per_rank = self.rows // self.world_size
        return rows[self.rank :: self.world_size][:per_rank]

    def _row(self, i: int) -> np.ndarray:
        shard = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self._shards[shard][i - self._starts[shard]]

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row i as (inputs, next-token targets), what MixedLoader stacks into batches."""
        row = self._row(i)
        return row[:-1], row[1:]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.epoch_rows()
        while self.position + self.batch_size <= len(order):
            rows = [self._row(int(i)) for i in order[self.position : self.position + self.batch_size]]
            self.position += self.batch_size
            batch = np.stack(rows).astype(np.int64)
            yield batch[:, :-1], batch[:, 1:]
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "rank", "world_size", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise LmforgeError(f"loader state has {key}={state.get(key)!r} but this loader has "
                                   f"{getattr(self, key)!r}; resume with the same settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
