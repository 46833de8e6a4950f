"""Retrieval over a RAG index: dense (embedding cosine), BM25, and hybrid by reciprocal rank fusion
(Cormack, Clarke & Buettcher, 2009, "Reciprocal Rank Fusion outperforms Condorcet and individual rank learning
methods"): score(d) = sum over rankers of 1 / (60 + rank(d)), so neither ranker's score scale matters."""

import threading
from dataclasses import dataclass

from lmforge.common.errors import LmforgeError

MODES = ("hybrid", "dense", "bm25")
RRF_K = 60
CANDIDATES = 50  # each ranker's depth before fusion


@dataclass(frozen=True)
class Hit:
    chunk: int
    score: float
    text: str
    source: str
    doc: str
    start: int
    end: int

    def where(self) -> str:
        name = self.source if self.doc in self.source else f"{self.source}#{self.doc}"
        return f"{name}:{self.start}-{self.end}"


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists; (id, fused score) best first, ties broken by id for a stable order."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class Retriever:
    def __init__(self, index, embedder):
        if embedder.dim != index.dim:
            raise LmforgeError(f"the embedder gives {embedder.dim}-d vectors; the index holds {index.dim}-d ones")
        self.index, self.embedder = index, embedder
        self.lock = threading.Lock()  # the catalogue's connection and the lazily built BM25 are shared state

    def ranked(self, query: str, k: int, mode: str = "hybrid", exact: bool | None = None) -> list[tuple[int, float]]:
        """(chunk id, score) best first."""
        if mode not in MODES:
            raise LmforgeError(f"unknown retrieval mode {mode!r}; valid: {', '.join(MODES)}")
        if k < 1:
            raise LmforgeError(f"k={k} must be >= 1")
        depth = max(k, CANDIDATES) if mode == "hybrid" else k
        dense = bm25 = []
        if mode in ("dense", "hybrid"):
            vector = self.embedder.embed([query]).numpy()
            dense = self.index.vectors().search(vector, depth, exact=exact)[0]
        if mode in ("bm25", "hybrid"):
            bm25 = self.index.bm25().search(query, depth)
        if mode == "dense":
            return dense[:k]
        if mode == "bm25":
            return bm25[:k]
        return rrf([[c for c, _ in dense], [c for c, _ in bm25]])[:k]

    def retrieve(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        with self.lock:
            ranked = self.ranked(query, k, mode)
            if not ranked:
                return []
            ids = [c for c, _ in ranked]
            texts, where = self.index.catalog.texts(ids), self.index.catalog.first_mentions(ids)
        return [Hit(c, s, texts[c], where[c].source, where[c].doc, where[c].start, where[c].end) for c, s in ranked]
