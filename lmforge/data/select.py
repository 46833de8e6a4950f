"""SFT data selection on scores and embeddings already computed: top-k by a score, K-Center-Greedy coverage of the
embedding space (Sener & Savarese, 2018, "Active Learning for Convolutional Neural Networks: A Core-Set Approach"),
DEITA's quality x diversity filter (Liu et al., 2024, "What Makes Good Data for Alignment?": rows in score order,
each kept only if no kept row is a near neighbour), and exact deduplication before any of them (Lee et al., 2022: a
copy adds no information but takes a place in the budget). Numpy only and deterministic: ties go to the earlier row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.data.exact_dedup import ExactDedup, ExactDedupConfig


def keep_count(n: int, keep: float) -> int:
    """Rows kept out of n: a fraction in (0, 1] (rounded, at least one) or a whole number of rows (>= 1)."""
    if keep <= 0 or (keep > 1 and keep != int(keep)):
        raise LmforgeError(f"--keep {keep:g} must be a fraction in (0, 1] or a whole number of rows >= 1")
    k = int(keep) if keep > 1 else max(1, round(keep * n))
    return min(k, n)


def first_copies(texts: Sequence[str]) -> tuple[np.ndarray, dict[int, int]]:
    """(indices of the first copy of every distinct text, {later copy: its first copy}). Texts are compared after
    NFKC and whitespace collapsing but not lower-casing: in instruction data case is part of the answer ("HELLO"
    answers "in capital letters", "hello" does not)."""
    dedup, first, copies = ExactDedup(ExactDedupConfig(lowercase=False)), {}, {}
    for i, text in enumerate(texts):
        key = dedup.digest(text)
        if key in first:
            copies[i] = first[key]
        else:
            first[key] = i
    return np.array(sorted(first.values()), dtype=np.int64), copies


def _finite(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.where(np.isfinite(s), s, -np.inf)  # an unscorable row (nan, inf) ranks last


def top_k(scores: Sequence[float], k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (a stable sort: on a tie the earlier row wins)."""
    return np.argsort(-_finite(scores), kind="stable")[:k]


def random_k(n: int, k: int, seed: int = 0) -> np.ndarray:
    """k of n rows drawn uniformly without replacement (the baseline a selector has to beat)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _unit(vectors) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0 or not np.all(np.isfinite(v)):
        raise LmforgeError(f"embeddings must be a finite [N, dim] array with N >= 1, got shape {v.shape}")
    return v


def k_center_greedy(vectors, k: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """k rows that cover the embedding space: start at the row farthest from the mean, then add, k - 1 times, the
    row farthest (Euclidean) from every row chosen so far. A 2-approximation of the k-center problem; O(N k dim)."""
    v = _unit(vectors)
    k = min(k, len(v))
    first = int(np.argmax(((v - v.mean(0)) ** 2).sum(1)))
    chosen = [first]
    nearest = ((v - v[first]) ** 2).sum(1)  # squared distance of each row to its nearest chosen row
    for step in range(1, k):
        nxt = int(np.argmax(nearest))  # argmax takes the first of equal distances: deterministic
        chosen.append(nxt)
        nearest = np.minimum(nearest, ((v - v[nxt]) ** 2).sum(1))
        if progress is not None:
            progress(step)
    return np.array(chosen, dtype=np.int64)


def quality_diversity(scores: Sequence[float], vectors, k: int, max_similarity: float = 0.9,
                      progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """DEITA's score-first diversity filter: rows in descending score; a row is kept when its cosine similarity to
    every kept row is at most `max_similarity`, until k are kept. If the pool runs out first (too many near
    neighbours), the best-scored skipped rows fill the budget. Returns (indices best first, rows filled that way)."""
    v = _unit(vectors)
    if len(v) != len(scores):
        raise LmforgeError(f"{len(scores)} scores but {len(v)} embeddings")
    if not -1 <= max_similarity <= 1:
        raise LmforgeError(f"--max-similarity {max_similarity} must be a cosine similarity in [-1, 1]")
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    k = min(k, len(v))
    kept, skipped = [], []
    kept_vectors = np.empty((k, v.shape[1]))
    for n, i in enumerate(top_k(scores, len(v))):
        if len(kept) == k:
            break
        if kept and float((kept_vectors[:len(kept)] @ unit[i]).max()) > max_similarity:
            skipped.append(int(i))
        else:
            kept_vectors[len(kept)] = unit[i]
            kept.append(int(i))
        if progress is not None:
            progress(n + 1)
    filled = skipped[:k - len(kept)]
    return np.array(kept + filled, dtype=np.int64), len(filled)


def kmeans(vectors, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """Cluster labels [N] by Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii, 2007), seeded."""
    v = _unit(vectors)
    k = max(1, min(k, len(v)))
    rng = np.random.default_rng(seed)
    centers = [v[rng.integers(len(v))]]
    for _ in range(1, k):
        d = np.maximum(np.min([((v - c) ** 2).sum(1) for c in centers], axis=0), 0)
        centers.append(v[rng.choice(len(v), p=d / d.sum())] if d.sum() > 0 else v[rng.integers(len(v))])
    centers = np.array(centers)
    labels = np.zeros(len(v), dtype=np.int64)
    norms = (v ** 2).sum(1)
    for step in range(iters):
        new = (norms[:, None] - 2 * v @ centers.T + (centers ** 2).sum(1)[None]).argmin(1)  # no [N, k, dim] array
        if step > 0 and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            if np.any(labels == c):
                centers[c] = v[labels == c].mean(0)
    return labels


def stratified(labels: np.ndarray, k: int, pick: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """k rows spread over the strata (clusters) in proportion to their sizes (largest remainder), `pick(rows,
    k_c)` choosing inside each: a score ranked across the whole pool drifts to the easiest kind of row (lowest
    perplexity), inside each cluster it ranks like with like."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    exact = np.array([k * len(g) / len(labels) for g in groups])
    budget = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - budget), kind="stable")[: k - budget.sum()]:
        budget[c] += 1
    return np.concatenate([g[pick(g, int(b))] for g, b in zip(groups, budget, strict=True) if b > 0])
