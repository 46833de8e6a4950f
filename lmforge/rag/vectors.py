"""The vector store: a usearch index (Malkov & Yashunin, 2018, "HNSW"; keys = chunk ids, inner product on
L2-normalised float32 vectors), persisted next to the catalogue.

Why usearch: one small wheel (no BLAS), float32 storage, add *and remove* by key, save / load / memory-map, and
both exhaustive exact search and HNSW in the same index, so "exact below a size, ANN above" is one flag.
sqlite-vec was the first choice (vectors in the catalogue's own transactions) but Python's bundled sqlite3 often
cannot load extensions (this CPython: no `enable_load_extension`); FAISS stays the benchmark's baseline.
The catalogue (SQLite) holds the vectors' ground truth: this file is derived from it, stamped with the catalogue's
generation, and rebuilt whenever the stamp does not match (a build killed before saving, a damaged file).
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError

EXACT_BELOW = 20_000  # chunks: under this, search is exhaustive (exact); above it, HNSW
CONNECTIVITY, EXPANSION_ADD = 16, 128
# HNSW's search beam for k results in n vectors: EXPANSION_AT_REF at (REF_SIZE, REF_K), growing as sqrt(n * k).
EXPANSION_AT_REF, REF_SIZE, REF_K = 128, EXACT_BELOW, 10


def search_expansion(size: int, k: int) -> int:
    """HNSW's search beam (usearch `expansion_search`, "ef") for k results in an index of `size` vectors.

    Measured (benchmarks/rag_ann_sweep.py, docs/rag.md): the beam that just reaches recall 0.95 against exact grows
    as ~sqrt(size * k) between 20k and 100k vectors and k = 10..50 (62 at 20k / k=10, 135 at 100k / k=10, 290 at
    100k / k=50). The rule keeps twice that beam (recall 0.98-0.99 where measured). Past the measured sizes sqrt
    grows faster than HNSW's search cost is expected to (polylogarithmic), so it errs toward recall, not speed."""
    return max(k, math.ceil(EXPANSION_AT_REF * math.sqrt(size / REF_SIZE * k / REF_K)))


def _usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise LmforgeError("the RAG index needs usearch and bm25s: pip install 'lmforge[rag]'") from None
    return Index


class VectorIndex:
    def __init__(self, dim: int):
        self.dim = dim
        self.index = _usearch()(ndim=dim, metric="ip", dtype="f32", connectivity=CONNECTIVITY,
                                expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_AT_REF)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add(np.asarray(ids, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self, ids: list[int]) -> None:
        if ids:
            self.index.remove(np.asarray(ids, dtype=np.uint64))

    def search(self, queries: np.ndarray, k: int, exact: bool | None = None,
               expansion: int | None = None) -> list[list[tuple[int, float]]]:
        """For each query row, up to k (chunk id, cosine similarity), best first. `expansion`: HNSW's search beam
        (default `search_expansion(len(self), k)`)."""
        if len(self.index) == 0:
            return [[] for _ in range(len(queries))]
        exact = len(self.index) < EXACT_BELOW if exact is None else exact
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if not exact:
            self.index.expansion_search = expansion or search_expansion(len(self.index), k)
        found = self.index.search(queries, min(k, len(self.index)), exact=exact)
        out = []
        for row in range(len(queries)):
            n = int(found.counts[row]) if hasattr(found, "counts") else len(found.keys)
            keys = found.keys[row][:n] if found.keys.ndim == 2 else found.keys[:n]
            dists = found.distances[row][:n] if found.distances.ndim == 2 else found.distances[:n]
            out.append([(int(key), 1.0 - float(d)) for key, d in zip(keys, dists, strict=True)])  # ip distance = 1-dot
        return out

    def save(self, directory: Path, generation: int) -> None:
        """Write the index, then its stamp (each replaced atomically): a crash leaves an old stamp, never a new
        stamp over an old index."""
        tmp = directory / "vectors.usearch.tmp"
        self.index.save(str(tmp))
        os.replace(tmp, directory / "vectors.usearch")
        stamp = directory / "vectors.json.tmp"
        stamp.write_text(json.dumps({"generation": generation, "count": len(self.index), "dim": self.dim,
                                     "sha256": _digest(directory / "vectors.usearch")}))
        os.replace(stamp, directory / "vectors.json")

    @classmethod
    def load(cls, directory: Path, dim: int, generation: int, count: int) -> "VectorIndex | None":
        """The saved index if its stamp matches the catalogue (generation, count, dim); None when it must be rebuilt."""
        try:
            stamp = json.loads((directory / "vectors.json").read_text())
            path = directory / "vectors.usearch"
            # the digest is checked before the file reaches usearch's loader, which trusts what it reads
            if stamp != {"generation": generation, "count": count, "dim": dim, "sha256": _digest(path)}:
                return None
            vectors = cls(dim)
            vectors.index.load(str(path))
        except (OSError, ValueError, RuntimeError, TypeError):
            return None
        return vectors if len(vectors) == count else None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
