"""MinHash LSH near-dedup: lmforge's numpy implementation against datasketch (MinHash + MinHashLSH) on the
same sample corpus, the same word 5-gram shingles, 112 permutations and 14 bands x 8 rows, in one run.

Prints one JSON line: ours_docs_per_s, baseline_docs_per_s, ratio, ours_recall, baseline_recall (recall on
the planted near-duplicate pairs, Jaccard >= 0.8) and the false-positive rates on documents with no planted twin.
Usage: python benchmarks/dedup.py [--good 3000] [--near 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from datasketch import MinHash, MinHashLSH

from lmforge.common.timing import best_time
from lmforge.data.minhash import TOKEN_RE, MinHashConfig, MinHashDeduper, UnionFind
from lmforge.data.sample_corpus import SampleConfig, generate


def ours(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    deduper = MinHashDeduper(cfg)
    sig = deduper.signatures(texts)
    return deduper.clusters(sig, (sig == np.iinfo(np.uint32).max).all(axis=1))


def baseline(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    sketches = []
    for i, text in enumerate(texts):
        words = TOKEN_RE.findall(text.lower())
        n = min(cfg.ngram, len(words))
        shingles = {" ".join(words[j : j + n]).encode() for j in range(len(words) - n + 1)} if n else set()
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch(list(shingles))
        lsh.insert(i, m)
        sketches.append(m)
    uf = UnionFind(len(texts))
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            uf.union(i, j)
    return np.array([uf.find(i) for i in range(len(texts))])


def quality(roots: np.ndarray, truth: list[dict]) -> tuple[float, float]:
    index = {t["id"]: i for i, t in enumerate(truth)}
    pairs = [(index[t["near_dup_of"]], i) for i, t in enumerate(truth) if t["near_dup_of"] and t["jaccard"] >= 0.8]
    recall = float(np.mean([roots[a] == roots[b] for a, b in pairs]))
    involved = {i for pair in pairs for i in pair}
    involved |= {i for i, t in enumerate(truth) if t["exact_dup_of"]}
    involved |= {index[t["exact_dup_of"]] for t in truth if t["exact_dup_of"]}
    sizes = np.bincount(roots, minlength=len(roots))
    clean = [i for i, t in enumerate(truth) if i not in involved and t["kind"] in ("good", "foreign")]
    return recall, float(np.mean([sizes[roots[i]] > 1 for i in clean]))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=3000, help="good documents in the sample corpus")
    parser.add_argument("--near", type=int, default=300, help="planted near-duplicates")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    args = parser.parse_args()
    docs, truth = generate(SampleConfig(seed=11, good=args.good, near_duplicates=args.near, exact_duplicates=0))
    texts = [d["text"] for d in docs]
    cfg = MinHashConfig()
    t_ours, r_ours = best_time(lambda: ours(texts, cfg), args.repeat)
    t_base, r_base = best_time(lambda: baseline(texts, cfg), args.repeat)
    ours_recall, ours_fpr = quality(r_ours, truth)
    base_recall, base_fpr = quality(r_base, truth)
    print(json.dumps({
        "benchmark": "minhash_lsh_dedup",
        "docs": len(texts),
        "num_perm": cfg.num_perm, "bands": cfg.bands, "rows": cfg.rows, "ngram": cfg.ngram,
        "ours_docs_per_s": round(len(texts) / t_ours, 1),
        "baseline_docs_per_s": round(len(texts) / t_base, 1),
        "ratio": round(t_base / t_ours, 2),
        "ours_recall": round(ours_recall, 4),
        "baseline_recall": round(base_recall, 4),
        "ours_false_positive_rate": round(ours_fpr, 4),
        "baseline_false_positive_rate": round(base_fpr, 4),
        "baseline": "datasketch MinHash.update_batch + MinHashLSH(params=(14, 8))",
    }))


if __name__ == "__main__":
    main()
