"""Lexical retrieval with BM25 (Robertson & Zaragoza, 2009) through `bm25s` (Lù, 2024), over the catalogue's chunk
texts: lower-cased word tokens, English stop words removed. Built in memory from the catalogue when first asked
for (a few seconds for 100k chunks), so it can never disagree with the stored chunks."""

import numpy as np

from lmforge.common.errors import LmforgeError


def _bm25s():
    try:
        import bm25s
    except ImportError:
        raise LmforgeError("the RAG index needs usearch and bm25s: pip install 'lmforge[rag]'") from None
    return bm25s


class BM25:
    def __init__(self, ids: list[int], texts: list[str]):
        bm25s = _bm25s()
        self.ids = np.asarray(ids, dtype=np.int64)
        self.retriever = None
        if texts:
            self.retriever = bm25s.BM25()
            tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
            self.retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to k (chunk id, BM25 score) with a positive score, best first."""
        if self.retriever is None:
            return []
        tokens = _bm25s().tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        vocab = self.retriever.vocab_dict
        tokens = [[t for t in tokens[0] if t in vocab]]
        if not tokens[0]:
            return []
        docs, scores = self.retriever.retrieve(tokens, k=min(k, len(self.ids)), show_progress=False, n_threads=1)
        return [(int(self.ids[d]), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
