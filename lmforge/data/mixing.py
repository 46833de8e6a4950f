"""Weighted data mixing: several packed-token sources interleaved row by row in fixed proportions (Megatron-LM's
blended datasets), for pretraining on a mix and for replay of general data during continued pretraining.
The blend is Megatron's greedy schedule: each row comes from the source furthest below its share, so after n rows
every source has given within one row of weight x n; it is deterministic and resumes exactly from `state_dict()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.loader import PackedLoader


def parse_mix_entry(entry: str) -> tuple[str, float]:
    """'PATH:WEIGHT' -> (PATH, WEIGHT); the weight is a number in (0, 1)."""
    path, sep, weight = str(entry).rpartition(":")
    try:
        value = float(weight) if sep and path else None
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise ConfigError(f"mix entry {entry!r} is not PATH:WEIGHT with a weight in (0, 1) (e.g. corpus:0.3)")
    return path, value


def check_weights(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise LmforgeError(f"mixing weights {list(weights)!r} must be one or more positive numbers")
    return w / w.sum()


def blend_schedule(weights: Sequence[float], n: int, counts: Sequence[int] | None = None) -> np.ndarray:
    """The sources of the next n rows given how many rows each source has already given (Megatron's
    build_blending_indices: pick the source with the largest shortfall weight x (drawn + 1) - count)."""
    w = check_weights(weights)
    counts = np.zeros(len(w), dtype=np.int64) if counts is None else np.array(counts, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        source = int(np.argmax(w * (counts.sum() + 1) - counts))
        out[i] = source
        counts[source] += 1
    return out


class MixedLoader:
    """Batches whose rows come from several loaders in proportion to their weights: PackedLoaders (pretraining)
    or SFTLoaders (chat data); a source gives row i as `example(i)`.

    Each source keeps its own cursor (epoch, row) over its own seeded order, and starts its next epoch when it runs
    out, so a small source (replay data) repeats while a large one is still in its first pass. An epoch of the
    mix is as many batches as all sources hold rows together. `state_dict()` holds every cursor and the per-source
    counts; loading it continues the exact same sequence of rows.
    """

    def __init__(self, sources: Sequence[PackedLoader], weights: Sequence[float], batch_size: int,
                 names: Sequence[str] | None = None) -> None:
        if len(sources) != len(weights):
            raise LmforgeError(f"{len(sources)} sources but {len(weights)} weights")
        if batch_size < 1:
            raise LmforgeError(f"batch_size={batch_size} must be >= 1")
        self.sources, self.weights = list(sources), check_weights(weights)
        self.names = list(names) if names is not None else [f"source{i}" for i in range(len(self.sources))]
        first = self.sources[0]
        for name, src in zip(self.names, self.sources, strict=True):
            if src.seq_len != first.seq_len:
                raise LmforgeError(f"mix source {name!r} has seq_len {src.seq_len}, the first has {first.seq_len}; "
                                   f"pack every source with the same --seq-len")
            if len(src.epoch_rows()) == 0:
                raise LmforgeError(f"mix source {name!r} has no rows for rank {src.rank} of {src.world_size}")
        self.seq_len, self.batch_size = first.seq_len, batch_size
        self.rank, self.world_size = first.rank, first.world_size
        self.epoch, self.batch = 0, 0  # batches of the current mixed epoch already yielded
        self.counts = np.zeros(len(self.sources), dtype=np.int64)
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return sum(len(s.epoch_rows()) for s in self.sources) // self.batch_size

    def _order(self, i: int) -> np.ndarray:
        src = self.sources[i]
        cached = self._orders.get(i)
        if cached is None or cached[0] != src.epoch:
            cached = self._orders[i] = (src.epoch, src.epoch_rows())
        return cached[1]

    def _next_row(self, i: int) -> tuple[np.ndarray, ...]:
        src, order = self.sources[i], self._order(i)
        row = src.example(int(order[src.position]))
        src.position += 1
        if src.position == len(order):
            src.epoch, src.position = src.epoch + 1, 0
        return row

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches shaped as the sources' own: (x, y) of token rows, (x, y, segment ids) of packed SFT rows."""
        while self.batch < len(self):
            picks = blend_schedule(self.weights, self.batch_size, self.counts)
            rows = [self._next_row(int(i)) for i in picks]
            np.add.at(self.counts, picks, 1)
            self.batch += 1
            yield tuple(np.stack(parts).astype(np.int64) for parts in zip(*rows, strict=True))
        self.epoch, self.batch = self.epoch + 1, 0

    def shares(self) -> dict[str, float]:
        """The share of rows each source has given so far."""
        total = max(int(self.counts.sum()), 1)
        return {name: int(c) / total for name, c in zip(self.names, self.counts, strict=True)}

    def state_dict(self) -> dict:
        return {"mix": True, "names": self.names, "weights": [float(w) for w in self.weights],
                "epoch": self.epoch, "batch": self.batch, "counts": [int(c) for c in self.counts],
                "sources": [{"epoch": s.epoch, "position": s.position} for s in self.sources],
                "seed": self.sources[0].seed, "rank": self.rank, "world_size": self.world_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if not state.get("mix"):
            raise LmforgeError("the checkpoint's data cursor is of a single source, this run mixes several; resume "
                               "with the same data settings")
        mine = self.state_dict()
        for key in ("names", "weights", "seed", "world_size", "batch_size"):
            same = (np.allclose(state.get(key), mine[key]) if key == "weights" and len(state.get(key) or []) ==
                    len(mine[key]) else state.get(key) == mine[key])
            if not same:
                raise LmforgeError(f"loader state has {key}={state.get(key)!r} but this mix has {mine[key]!r}; "
                                   f"resume with the same settings")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.counts = np.array(state["counts"], dtype=np.int64)
        for src, cursor in zip(self.sources, state["sources"], strict=True):
            src.epoch, src.position = int(cursor["epoch"]), int(cursor["position"])
