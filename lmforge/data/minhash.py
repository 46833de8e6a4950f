"""MinHash LSH near-duplicate detection (Broder 1997, "On the resemblance and containment of documents";
banding as in Leskovec et al., "Mining of Massive Datasets", ch. 3), with the FineWeb defaults: word 5-gram
shingles, 14 bands x 8 rows = 112 hash functions, union-find clusters, one document kept per cluster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lmforge.data.validate import in_range

# A token is one CJK character (Chinese has no spaces) or a run of other word characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_MASK32 = np.uint64(0xFFFFFFFF)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class MinHashConfig:
    """ngram: words per shingle (5). bands x rows: LSH layout (14 x 8 = 112 permutations); two documents
    become candidates when all rows of one band agree, i.e. with probability 1-(1-J^rows)^bands at Jaccard J.
    min_similarity: if > 0, a candidate pair is only merged when its signatures agree on this fraction
    (0 = off, as in FineWeb). seed: the hash functions. batch_shingles: shingles hashed per numpy batch.
    """

    ngram: int = 5
    bands: int = 14
    rows: int = 8
    min_similarity: float = 0.0
    seed: int = 1
    batch_shingles: int = 1 << 13

    def __post_init__(self) -> None:
        in_range("ngram", self.ngram, 1, 64)
        in_range("bands", self.bands, 1)
        in_range("rows", self.rows, 1)
        in_range("min_similarity", self.min_similarity, 0.0, 1.0)
        in_range("batch_shingles", self.batch_shingles, 1024)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads the bits of a uint64 array (in place, wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; the root of a set is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


class MinHashDeduper:
    """`signatures(texts)` -> (n, bands*rows) uint32; `clusters(sig)` -> root index per document;
    `find_removals(texts)` -> {index: reason} for all but the first member of every cluster."""

    name = "minhash_dedup"

    def __init__(self, config: MinHashConfig | None = None) -> None:
        self.config = cfg = config or MinHashConfig()
        rng = np.random.default_rng(cfg.seed)
        # multiply-add-shift hashing of 32-bit shingle hashes: h(x) = ((a*x + b) mod 2^64) >> 32, a odd.
        self._a = rng.integers(1, 2**63, size=cfg.num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=cfg.num_perm, dtype=np.uint64)
        self._gram = rng.integers(1, 2**63, size=cfg.ngram, dtype=np.uint64) | np.uint64(1)
        self._band_mult = rng.integers(1, 2**63, size=cfg.rows, dtype=np.uint64) | np.uint64(1)
        self._word_cache: dict[str, int] = {}

    def word_hashes(self, text: str) -> np.ndarray:
        """64-bit hash of every token of the lower-cased text (cached per distinct token)."""
        cache = self._word_cache
        if len(cache) > 2_000_000:
            cache.clear()
        tokens = TOKEN_RE.findall(text.lower())
        hashes = list(map(cache.get, tokens))  # the common case, all tokens cached, stays in C
        if None in hashes:
            for i, h in enumerate(hashes):
                if h is None:
                    token = tokens[i]
                    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
                    cache[token] = hashes[i] = h
        return np.array(hashes, dtype=np.uint64)

    def shingle_hashes(self, words: np.ndarray) -> np.ndarray:
        """32-bit hashes (as uint64) of every word n-gram; a text shorter than n is one shingle."""
        n = min(self.config.ngram, len(words))
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        count = len(words) - n + 1
        acc = np.zeros(count, dtype=np.uint64)
        for j in range(n):  # a loop over the n positions of the gram, vectorised over all shingles
            acc += words[j : j + count] * self._gram[j]
        return _mix64(acc) >> np.uint64(32)

    def _signature_batch(self, shingles: list[np.ndarray]) -> np.ndarray:
        sig = np.full((len(shingles), self.config.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        nonempty = [i for i, s in enumerate(shingles) if len(s)]
        if not nonempty:
            return sig
        x = np.concatenate([shingles[i] for i in nonempty])
        offsets = np.cumsum([0] + [len(shingles[i]) for i in nonempty[:-1]])
        hashed = np.multiply.outer(x, self._a)  # (shingles, permutations), wrapping uint64
        hashed += self._b
        # the minimum of the 64-bit values carries the minimum of their top 32 bits: shift after reducing
        sig[nonempty] = np.minimum.reduceat(hashed, offsets, axis=0) >> np.uint64(32)
        return sig

    def iter_signatures(self, texts: Iterable[str]) -> Iterator[np.ndarray]:
        """Signature blocks, hashing about `batch_shingles` shingles per numpy call (bounded memory)."""
        pending: list[np.ndarray] = []
        size = 0
        for text in texts:
            shingles = self.shingle_hashes(self.word_hashes(text))
            pending.append(shingles)
            size += len(shingles)
            if size >= self.config.batch_shingles:
                yield self._signature_batch(pending)
                pending, size = [], 0
        if pending:
            yield self._signature_batch(pending)

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        blocks = list(self.iter_signatures(texts))
        if not blocks:
            return np.zeros((0, self.config.num_perm), dtype=np.uint32)
        return np.concatenate(blocks)

    def band_keys(self, sig: np.ndarray, band: int) -> np.ndarray:
        """One 64-bit key per document for `band` (equal rows give equal keys)."""
        rows = self.config.rows
        block = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        return _mix64((block * self._band_mult).sum(axis=1, dtype=np.uint64) + np.uint64(band))

    def band_pairs(self, sig: np.ndarray, band: int, index: np.ndarray | None = None) -> np.ndarray:
        """Candidate pairs (i, j), shape (m, 2), of the documents `index` (default: all) that share the key of
        `band`: every document whose key equals its predecessor's pairs with the first document of that run.
        With min_similarity > 0 only pairs whose signatures agree that much are kept. Bands are independent,
        so a cluster can bucket them on different workers (`lmforge.data.ray_dedup`)."""
        index = np.arange(len(sig)) if index is None else index
        keys = self.band_keys(sig[index], band)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if len(same) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        run_start = np.maximum.accumulate(np.where(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]],
                                                   np.arange(len(keys)), 0))
        pairs = np.stack([index[order[run_start[same + 1]]], index[order[same + 1]]], axis=1).astype(np.int64)
        if self.config.min_similarity > 0:
            agree = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)
            pairs = pairs[agree >= self.config.min_similarity]
        return pairs

    @staticmethod
    def roots_from_pairs(n: int, pair_blocks: Iterable[np.ndarray]) -> np.ndarray:
        """Union-find over candidate pairs: the root (smallest index) of each document's cluster."""
        uf = UnionFind(n)
        for pairs in pair_blocks:
            for i, j in pairs.tolist():
                uf.union(i, j)
        return np.array([uf.find(i) for i in range(n)], dtype=np.int64)

    def clusters(self, sig: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
        """Root (smallest index) of each document's near-duplicate cluster; `empty` rows never match."""
        index = np.arange(len(sig)) if empty is None else np.flatnonzero(~empty)
        blocks = (self.band_pairs(sig, band, index) for band in range(self.config.bands))
        return self.roots_from_pairs(len(sig), blocks)

    @staticmethod
    def empty_rows(sig: np.ndarray) -> np.ndarray:
        """Documents with no shingle at all (their signature is all max values): they never match."""
        return (sig == np.iinfo(np.uint32).max).all(axis=1)

    @property
    def reason(self) -> str:
        return f"{self.name}:near_duplicate"

    def removals_from_roots(self, roots: np.ndarray) -> dict[int, str]:
        """{index: reason} for every document that is not the root (first member) of its cluster."""
        return {int(i): self.reason for i in np.flatnonzero(roots != np.arange(len(roots)))}

    def find_removals(self, texts: Iterable[str]) -> dict[int, str]:
        sig = self.signatures(texts)
        return self.removals_from_roots(self.clusters(sig, self.empty_rows(sig)))
