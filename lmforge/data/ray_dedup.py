"""Global steps on Ray: exact dedup as a hash-keyed groupby (the first copy in corpus order is kept), MinHash
LSH with signatures computed in parallel and the banding partitioned by band across Ray tasks (union-find on
the driver), and any other global step by its own `find_removals` on the driver over the texts in order.
Each returns what the local runner computes, keyed by (shard, position): removals and metadata notes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from lmforge.data.exact_dedup import ExactDedup
from lmforge.data.minhash import MinHashDeduper
from lmforge.data.steps import GlobalStep

Key = tuple[int, int]  # (shard, position of the document in the shard as first read)
Batch = dict[str, np.ndarray]


def _digests(batch: Batch, step: ExactDedup) -> Batch:
    digests = [step.digest(str(text)).hex() for text in batch["text"]]
    return {"shard": batch["shard"], "pos": batch["pos"], "digest": np.array(digests, dtype=object)}


def _later_copies(group: Batch) -> Batch:
    """One digest's documents: all but the first in corpus order (shard, then position)."""
    later = np.lexsort((group["pos"], group["shard"]))[1:]
    return {"shard": group["shard"][later], "pos": group["pos"][later]}


def exact_dedup_removals(ds: Any, step: ExactDedup) -> dict[Key, str]:
    """Hash every normalised text in parallel, group by digest, remove every copy after the first."""
    dups = (ds.map_batches(_digests, fn_kwargs={"step": step}, batch_format="numpy")
            .groupby("digest").map_groups(_later_copies, batch_format="numpy"))
    return {(int(row["shard"]), int(row["pos"])): step.reason for row in dups.iter_rows()}


def _signatures(batch: Batch, step: MinHashDeduper) -> Batch:
    return {"shard": batch["shard"], "pos": batch["pos"], "sig": step.signatures(str(t) for t in batch["text"])}


def _bands_task(step: MinHashDeduper, sig: np.ndarray, index: np.ndarray, bands: list[int]) -> list[np.ndarray]:
    """The LSH work of one Ray task: the candidate pairs of each of its bands."""
    return [step.band_pairs(sig, band, index) for band in bands]


def band_candidates(step: MinHashDeduper, sig: np.ndarray, empty: np.ndarray, tasks: int) -> list[np.ndarray]:
    """Candidate pairs of every band, in band order, bucketed by `tasks` Ray tasks (each a group of bands)."""
    import ray

    sig_ref, index_ref = ray.put(sig), ray.put(np.flatnonzero(~empty))
    remote = ray.remote(_bands_task)
    groups = np.array_split(np.arange(step.config.bands), max(1, min(tasks, step.config.bands)))
    futures = [remote.remote(step, sig_ref, index_ref, group.tolist()) for group in groups]
    return [pairs for result in ray.get(futures) for pairs in result]


def minhash_removals(ds: Any, step: MinHashDeduper, tasks: int) -> dict[Key, str]:
    """Signatures in parallel (Ray Data), LSH partitioned by band (Ray tasks), union-find on the driver."""
    blocks = list(ds.map_batches(_signatures, fn_kwargs={"step": step}, batch_format="numpy")
                  .iter_batches(batch_format="numpy", batch_size=None))
    blocks = [b for b in blocks if len(b["shard"])]
    if not blocks:
        return {}
    shard = np.concatenate([b["shard"] for b in blocks])
    pos = np.concatenate([b["pos"] for b in blocks])
    order = np.lexsort((pos, shard))  # corpus order: the smallest index of a cluster is its first document
    sig = np.concatenate([b["sig"] for b in blocks])[order].astype(np.uint32, copy=False)
    pairs = band_candidates(step, sig, step.empty_rows(sig), tasks)
    roots = step.roots_from_pairs(len(sig), pairs)
    keys = list(zip(shard[order].tolist(), pos[order].tolist(), strict=True))
    return {keys[i]: reason for i, reason in step.removals_from_roots(roots).items()}


def driver_removals(ds: Any, step: GlobalStep) -> tuple[dict[Key, str], dict[Key, dict]]:
    """Any other global step (e.g. perplexity): its own find_removals over the texts streamed in order."""
    keys: list[Key] = []

    def texts() -> Iterator[str]:
        for row in ds.select_columns(["shard", "pos", "text"]).sort(["shard", "pos"]).iter_rows():
            keys.append((int(row["shard"]), int(row["pos"])))
            yield str(row["text"])

    removals = {keys[i]: reason for i, reason in step.find_removals(texts()).items()}
    notes = {}
    if hasattr(step, "annotations"):
        notes = {keys[i]: values for i, values in step.annotations().items()}
    return removals, notes


def global_removals(ds: Any, step: GlobalStep, tasks: int) -> tuple[dict[Key, str], dict[Key, dict]]:
    """(removals, metadata notes) of a stage's global step over the dataset `ds` (shard, pos, text, ...)."""
    if type(step) is ExactDedup:
        return exact_dedup_removals(ds, step), {}
    if type(step) is MinHashDeduper:
        return minhash_removals(ds, step, tasks), {}
    return driver_removals(ds, step)
