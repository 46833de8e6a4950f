"""HNSW search beam (usearch `expansion_search`, "ef") against recall and latency, at growing index sizes: the
measurement behind lmforge/rag/vectors.py's search setting.

The vectors are those of benchmarks/rag_index.py (the same invented-word corpus, seed 0, one chunk per record, the
hash embedder or MiniLM), added to lmforge's own `VectorIndex` (M=16, expansion_add=128) in order, so each size is
the index a growing corpus would have. At each size: --queries stored vectors plus N(0, 0.02) noise (as
rag_index.py), exact top-k by a matrix product, then single-query HNSW searches at each ef: recall@k against exact
and p50 / p95 latency. Prints one JSON line per (size, k, ef).
Usage: python benchmarks/rag_ann_sweep.py [--sizes 20000,50000,100000] [--efs 64,128,256,512] [--ks 10,50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmforge.rag.embedder import load_embedder
from lmforge.rag.vectors import VectorIndex

try:  # run as `python benchmarks/rag_ann_sweep.py`: the benchmark's corpus and hash embedder
    from rag_index import HashEmbedder, write_corpus
except ImportError:  # imported as benchmarks.rag_ann_sweep
    from benchmarks.rag_index import HashEmbedder, write_corpus


def corpus_vectors(chunks: int, embedder_kind: str) -> np.ndarray:
    minilm = load_embedder("all-minilm-l6-v2")
    embedder = minilm if embedder_kind == "minilm" else HashEmbedder(minilm)
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "docs", chunks)
        texts = [json.loads(line)["text"] for part in sorted((Path(tmp) / "docs").glob("*.jsonl"))
                 for line in part.read_text().splitlines()]
    return np.concatenate([embedder.embed(texts[i:i + 4096]).numpy() for i in range(0, len(texts), 4096)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,50000,100000", help="index sizes to measure at (comma-separated)")
    parser.add_argument("--efs", default="64,128,256,512", help="expansion_search values (comma-separated)")
    parser.add_argument("--ks", default="10,50", help="result counts k (10: the recall@10 figure; 50: hybrid's depth)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--embedder", choices=("hash", "minilm"), default="hash")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (embedding); searches are 1 query each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, efs, ks = ([int(x) for x in s.split(",")] for s in (args.sizes, args.efs, args.ks))
    started = time.perf_counter()
    vectors = corpus_vectors(max(sizes), args.embedder)
    print(json.dumps({"vectors": len(vectors), "embed_s": round(time.perf_counter() - started, 1)}), flush=True)
    store, have = VectorIndex(vectors.shape[1]), 0
    for size in sorted(sizes):
        started, added = time.perf_counter(), size - have
        store.add(np.arange(have, size), vectors[have:size])
        add_s, have = time.perf_counter() - started, size
        rng = np.random.default_rng(0)
        picks = rng.choice(size, size=args.queries, replace=False)
        queries = vectors[picks] + rng.standard_normal((args.queries, vectors.shape[1])).astype(np.float32) * 0.02
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        scores = queries @ vectors[:size].T
        for k in ks:
            exact = [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]
            for ef in efs:
                times, recalls = [], []
                for q, truth in zip(queries, exact, strict=True):
                    t0 = time.perf_counter()
                    found = store.search(q[None], k, exact=False, expansion=ef)[0]
                    times.append(time.perf_counter() - t0)
                    recalls.append(len({c for c, _ in found} & truth) / k)
                ms = np.asarray(times) * 1000
                print(json.dumps({"size": size, "k": k, "ef": ef, "recall": round(float(np.mean(recalls)), 4),
                                  "min_recall": round(float(np.min(recalls)), 2),
                                  "p50_ms": round(float(np.percentile(ms, 50)), 3),
                                  "p95_ms": round(float(np.percentile(ms, 95)), 3),
                                  "add_vectors_per_s": round(added / add_s)}), flush=True)


if __name__ == "__main__":
    main()
