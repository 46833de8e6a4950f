"""SFT batches: tokenized conversations shifted into (inputs, next-token labels) rows of seq_len, either one
conversation per row (right padding) or packed several to a row by best-fit decreasing, with segment ids so that
attention stays inside each conversation (model/segments.py). `SFTLoader` iterates them like PackedLoader
(seeded shuffle per epoch, rank split, a resumable state_dict cursor).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.train.post.sft_mask import Tokenized
from lmforge.train.step import IGNORE_INDEX


@dataclass
class SFTRows:
    x: np.ndarray  # [N, seq_len] int64 input ids
    y: np.ndarray  # [N, seq_len] int64 labels (IGNORE_INDEX where unsupervised or padding)
    segments: np.ndarray | None  # [N, seq_len] int64, 1..k per packed conversation, 0 on padding; None unpacked
    fill: float  # share of row positions holding real tokens (not padding)


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity: longest first, each into the fullest bin it fits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
        else:
            room, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (room - n, b))
    return bins


def build_rows(examples: list[Tokenized], seq_len: int, pack: bool, pad_id: int) -> SFTRows:
    """Each example (at most seq_len + 1 tokens) becomes inputs ids[:-1] and labels labels[1:]."""
    pieces = []
    for e in examples:
        if len(e.ids) > seq_len + 1:
            raise LmforgeError(f"an example of {len(e.ids)} tokens exceeds seq_len + 1 = {seq_len + 1}; "
                               f"tokenize with max_len=seq_len + 1")
        pieces.append((np.asarray(e.ids[:-1], dtype=np.int64), np.asarray(e.labels[1:], dtype=np.int64)))
    groups = best_fit_bins([len(p[0]) for p in pieces], seq_len) if pack else [[i] for i in range(len(pieces))]
    x = np.full((len(groups), seq_len), pad_id, dtype=np.int64)
    y = np.full((len(groups), seq_len), IGNORE_INDEX, dtype=np.int64)
    seg = np.zeros((len(groups), seq_len), dtype=np.int64)
    for r, group in enumerate(groups):
        at = 0
        for k, i in enumerate(group, start=1):
            ids, labels = pieces[i]
            x[r, at:at + len(ids)], y[r, at:at + len(ids)], seg[r, at:at + len(ids)] = ids, labels, k
            at += len(ids)
    return SFTRows(x, y, seg if pack else None, float((seg > 0).mean()) if len(groups) else 0.0)


class SFTLoader:
    """Batches of (x, y) — or (x, y, segment_ids) for packed rows — as int64 numpy arrays, PackedLoader-style."""

    def __init__(self, rows: SFTRows, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise LmforgeError(f"batch_size={batch_size} must be >= 1")
        self.rows, self.batch_size, self.shuffle, self.seed = rows, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.seq_len = rows.x.shape[1]
        self.epoch = self.position = 0

    def __len__(self) -> int:
        return (len(self.rows.x) // self.world_size) // self.batch_size

    def epoch_rows(self) -> np.ndarray:
        n = len(self.rows.x)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[self.rank :: self.world_size][: n // self.world_size]

    def example(self, i: int) -> tuple[np.ndarray, ...]:
        """Row i as (x, y) or (x, y, segment ids): what a MixedLoader (data/mixing.py) stacks into batches."""
        row = (self.rows.x[i], self.rows.y[i])
        return row if self.rows.segments is None else (*row, self.rows.segments[i])

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        order = self.epoch_rows()
        while self.position + self.batch_size <= len(order):
            idx = order[self.position : self.position + self.batch_size]
            self.position += self.batch_size
            batch = (self.rows.x[idx], self.rows.y[idx])
            yield batch if self.rows.segments is None else (*batch, self.rows.segments[idx])
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "rank", "world_size", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise LmforgeError(f"loader state has {key}={state.get(key)!r} but this loader has "
                                   f"{getattr(self, key)!r}; resume with the same settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
