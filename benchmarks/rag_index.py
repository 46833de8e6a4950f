"""The RAG index at scale: build an index of N chunks (default 100k) through `RagIndex.build` (read JSONL, chunk,
embed, commit to SQLite, add to usearch), then time single queries and measure HNSW recall@10 against exact search;
FAISS `IndexFlatIP` over the same vectors is the baseline, measured in the same run.

--embedder minilm: all-MiniLM-L6-v2 (the real cost; on a 2-core CPU about 100-300 chunks/s, so 100k chunks take
minutes); --embedder hash: a random projection of the MiniLM word pieces (bag of words, 384-d, same tokenizer and
chunking), to measure the store itself at 100k on a small machine. MiniLM's own rate on --sample chunks is always
measured and printed. Prints one JSON line.
Usage: python benchmarks/rag_index.py [--chunks 100000] [--embedder hash|minilm] [--queries 500] [--sample 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from lmforge.rag.chunking import ChunkSpec
from lmforge.rag.embedder import load_embedder
from lmforge.rag.index import RagIndex
from lmforge.rag.retrieval import Retriever
from lmforge.rag.sources import find_sources


def vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "tas", "vel", "dor", "is", "un", "per", "zo", "qua", "sel", "bri", "an"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def write_corpus(directory: Path, chunks: int, seed: int = 0) -> list[str]:
    """`chunks` short documents (one chunk each) in JSONL files of 1000; returns a few texts to query with."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    directory.mkdir(parents=True)
    probes = []
    for start in range(0, chunks, 1000):
        lines = []
        for i in range(start, min(start + 1000, chunks)):
            text = f"Record {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(12, 30))) + "."
            lines.append(json.dumps({"id": f"r{i}", "text": text}))
            if rng.random() < 0.01:
                probes.append(" ".join(text.split()[2:10]))
        (directory / f"part{start // 1000:05d}.jsonl").write_text("\n".join(lines) + "\n")
    return probes


class HashEmbedder:
    """Bag of word pieces through a fixed random projection, L2-normalised: the store's cost without a model."""

    def __init__(self, real):
        self.backend, self.name, self.dim, self.normalize = real.backend, "hash-projection", real.dim, True
        self.table = torch.randn(real.model.config.vocab_size, self.dim, generator=torch.Generator().manual_seed(0))

    def embed(self, texts, batch_size: int = 32) -> torch.Tensor:
        out = torch.stack([self.table[e.ids].sum(0) for e in self.backend.encode_batch(list(texts))])
        return torch.nn.functional.normalize(out, dim=-1)


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def timed(fn, items) -> tuple[list[float], list]:
    times, results = [], []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        times.append(time.perf_counter() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--embedder", choices=("hash", "minilm"), default="hash")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--sample", type=int, default=1000, help="chunks to time MiniLM's embedding rate on")
    args = parser.parse_args()
    minilm = load_embedder("all-minilm-l6-v2")
    embedder = minilm if args.embedder == "minilm" else HashEmbedder(minilm)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probes = write_corpus(tmp / "docs", args.chunks)
        sample_texts = [json.loads(line)["text"] for line in (tmp / "docs" / "part00000.jsonl").read_text()
                        .splitlines()[: args.sample]]
        start = time.perf_counter()
        minilm.embed(sample_texts)
        minilm_rate = len(sample_texts) / (time.perf_counter() - start)
        index = RagIndex.create_or_open(tmp / "index", embedder, ChunkSpec())
        stats = index.build(find_sources([str(tmp / "docs")]), embedder, group=8)
        ids, vectors = index.catalog.all_vectors(index.dim)
        rng = np.random.default_rng(0)
        picks = rng.choice(len(vectors), size=args.queries, replace=False)
        queries = vectors[picks] + rng.standard_normal((args.queries, index.dim)).astype(np.float32) * 0.02
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        store = index.vectors()
        exact_t, exact = timed(lambda q: store.search(q[None], 10, exact=True)[0], queries)
        ann_t, ann = timed(lambda q: store.search(q[None], 10, exact=False)[0], queries)
        recall = float(np.mean([len({c for c, _ in a} & {c for c, _ in e}) / 10 for a, e in zip(ann, exact,
                                                                                                 strict=True)]))
        retriever = Retriever(index, embedder)
        retriever.ranked(probes[0], 10, "bm25")  # builds BM25 once (timed below: bm25_build_s)
        hybrid_t, _ = timed(lambda q: retriever.ranked(q, 10, "hybrid"), probes[: args.queries])
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(index.dim)
        flat.add(np.ascontiguousarray(vectors))
        faiss_add_s = time.perf_counter() - start
        flat_t, flat_found = timed(lambda q: flat.search(q[None], 10)[1][0], queries)
        flat_agree = float(np.mean([len({int(ids[i]) for i in f} & {c for c, _ in e}) / 10
                                    for f, e in zip(flat_found, exact, strict=True)]))
        start = time.perf_counter()
        store_only = type(store)(index.dim)
        store_only.add(ids, vectors)
        usearch_add_s = time.perf_counter() - start
    print(json.dumps({
        "chunks": int(len(ids)), "embedder": args.embedder, "threads": torch.get_num_threads(),
        "index_chunks_per_s": round(stats.chunks_added / stats.seconds, 1),
        "minilm_embed_chunks_per_s": round(minilm_rate, 1),
        "ours_exact": percentiles(exact_t), "ours_hnsw": percentiles(ann_t), "ours_hybrid_with_embed": percentiles(
            hybrid_t), "hnsw_recall@10_vs_exact": round(recall, 4),
        "faiss_flat_ip": {**percentiles(flat_t), "add_vectors_per_s": round(len(ids) / faiss_add_s)},
        "usearch_add_vectors_per_s": round(len(ids) / usearch_add_s),
        "exact_agrees_with_faiss@10": round(flat_agree, 4),
        "ratio_hnsw_p50_vs_faiss_flat_p50": round(float(np.median(flat_t) / np.median(ann_t)), 2),
        "ratio_exact_p50_vs_faiss_flat_p50": round(float(np.median(flat_t) / np.median(exact_t)), 2),
    }))


if __name__ == "__main__":
    main()
