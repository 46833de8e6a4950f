"""The RAG index at scale: build an index of N chunks (default 100k) through `RagIndex.build` (read JSONL, chunk,
embed, commit to SQLite, add to usearch), then time single queries and measure HNSW recall@10 against exact search;
FAISS `IndexFlatIP` over the same vectors is the baseline, measured in the same run.

--embedder minilm: all-MiniLM-L6-v2 (the real cost; on a 2-core CPU about 100-300 chunks/s, so 100k chunks take
minutes); --embedder hash: a random projection of the MiniLM word pieces (bag of words, 384-d, same tokenizer and
chunking), to measure the store itself at 100k on a small machine. MiniLM's own rate on --sample chunks is always
measured and printed, beside sentence-transformers' `encode` on the same texts and threads (the reference).
--threads N pins torch's (and lmforge's kernels') threads for the whole run (default: lmforge's governor, which
drops to fewer threads while other processes load the CPU). Prints one JSON line, with the run's machine, load
average, date and commit.
Usage: python benchmarks/rag_index.py [--chunks 100000] [--embedder hash|minilm] [--queries 500] [--sample 1000]
                                      [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from lmforge.common.threads import set_threads
from lmforge.rag.chunking import ChunkSpec
from lmforge.rag.embedder import load_embedder
from lmforge.rag.index import RagIndex
from lmforge.rag.retrieval import Retriever
from lmforge.rag.sources import find_sources
from lmforge.rag.st_dir import embedded_encoder_path
from lmforge.rag.vectors import search_expansion


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


def overlap(found: list, truth: list, k: int) -> float:
    """Mean share of each truth list's ids that the found list holds (recall@k against exact search)."""
    return float(np.mean([len({c for c, _ in f} & {c for c, _ in t}) / k for f, t in zip(found, truth, strict=True)]))


def rate(fn, texts: list[str]) -> float:
    """Texts per second of fn(texts), the better of two runs after a warm-up batch."""
    fn(texts[:32])
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - start)
    return round(len(texts) / best, 1)


def sentence_transformers_rate(texts: list[str]) -> float | None:
    """sentence-transformers' own `encode` of all-MiniLM-L6-v2 on the same texts (None when not installed)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    threads = torch.get_num_threads()
    model = SentenceTransformer(str(embedded_encoder_path("all-minilm-l6-v2")), device="cpu")
    torch.set_num_threads(threads)  # loading must not change the count being compared
    return rate(lambda t: model.encode(t, batch_size=32), texts)


def run_facts() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "cpu": cpu, "cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--embedder", choices=("hash", "minilm"), default="hash")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--sample", type=int, default=1000, help="chunks to time MiniLM's embedding rate on")
    parser.add_argument("--threads", type=int, default=None, help="pin N CPU threads (default: lmforge's governor)")
    args = parser.parse_args()
    set_threads(args.threads)
    started_facts = run_facts()
    minilm = load_embedder("all-minilm-l6-v2")
    embedder = minilm if args.embedder == "minilm" else HashEmbedder(minilm)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probes = write_corpus(tmp / "docs", args.chunks)
        sample_texts = [json.loads(line)["text"] for line in (tmp / "docs" / "part00000.jsonl").read_text()
                        .splitlines()[: args.sample]]
        minilm_rate = rate(minilm.embed, sample_texts)
        st_rate = sentence_transformers_rate(sample_texts)
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
        recall = overlap(ann, exact, 10)
        recall50 = overlap(store.search(queries, 50, exact=False), store.search(queries, 50, exact=True), 50)
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
        **started_facts, "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "chunks": int(len(ids)), "embedder": args.embedder, "threads": torch.get_num_threads(),
        "index_chunks_per_s": round(stats.chunks_added / stats.seconds, 1),
        "minilm_embed_chunks_per_s": minilm_rate, "sentence_transformers_encode_chunks_per_s": st_rate,
        "hnsw_expansion_search@10": search_expansion(len(ids), 10),
        "ours_exact": percentiles(exact_t), "ours_hnsw": percentiles(ann_t), "ours_hybrid_with_embed": percentiles(
            hybrid_t), "hnsw_recall@10_vs_exact": round(recall, 4),
        "hnsw_recall@50_vs_exact": round(recall50, 4), "hnsw_expansion_search@50": search_expansion(len(ids), 50),
        "faiss_flat_ip": {**percentiles(flat_t), "add_vectors_per_s": round(len(ids) / faiss_add_s)},
        "usearch_add_vectors_per_s": round(len(ids) / usearch_add_s),
        "exact_agrees_with_faiss@10": round(flat_agree, 4),
        "ratio_hnsw_p50_vs_faiss_flat_p50": round(float(np.median(flat_t) / np.median(ann_t)), 2),
        "ratio_exact_p50_vs_faiss_flat_p50": round(float(np.median(flat_t) / np.median(exact_t)), 2),
    }))


if __name__ == "__main__":
    main()
