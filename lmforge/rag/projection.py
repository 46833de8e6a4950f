"""Seeing an index: chunk embeddings projected to 2-D by PCA (the top two principal components, from an SVD of the
centred vectors) and grouped by k-means (Lloyd's algorithm, k-means++ seeding: Arthur & Vassilvitskii, 2007), drawn
as a PNG coloured by source file or by cluster: the clustering and visualisation uses of sentence embeddings."""

from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError

COLOR_BY = ("source", "cluster")


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """[N, d] -> [N, 2]: coordinates along the two directions of largest variance."""
    centred = vectors - vectors.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster labels [N] by Lloyd's k-means with k-means++ seeding (deterministic for a seed)."""
    n = len(vectors)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((vectors - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(vectors[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else vectors[rng.integers(n)])
    centres = np.stack(centres)
    labels = np.zeros(n, dtype=np.int64)
    for step in range(iterations):
        new = ((centres ** 2).sum(1)[None, :] - 2 * vectors @ centres.T).argmin(1)  # ||x||^2 is the same per row
        if step and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                centres[j] = vectors[labels == j].mean(0)
    return labels


def draw_map(index, out: Path, color_by: str = "source", clusters: int = 8, seed: int = 0) -> dict:
    """Write the PNG; returns a summary (chunks, groups and their sizes)."""
    if color_by not in COLOR_BY:
        raise LmforgeError(f"--color {color_by!r} is not allowed; use one of {', '.join(COLOR_BY)}")
    if out.suffix.lower() != ".png":
        raise LmforgeError(f"--out {out}: expected a .png file")
    ids, vectors = index.catalog.all_vectors(index.dim)
    if len(ids) < 3:
        raise LmforgeError(f"the index holds {len(ids)} chunk(s); a map needs at least 3")
    xy = pca_2d(vectors.astype(np.float64))
    if color_by == "cluster":
        labels = [f"cluster {c}" for c in kmeans(vectors.astype(np.float64), clusters, seed)]
    else:
        where = index.catalog.first_mentions([int(i) for i in ids])
        labels = [Path(where[int(i)].source).name for i in ids]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(set(labels))
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    cmap = plt.get_cmap("tab20", max(len(groups), 1))
    for g, name in enumerate(groups):
        mask = np.array([label == name for label in labels])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=12, color=cmap(g % 20), label=name if len(groups) <= 20 else None)
    if len(groups) <= 20:
        ax.legend(fontsize=6, loc="best", markerscale=1.5)
    ax.set_title(f"{len(ids)} chunks of {index.directory.name}, PCA of {index.embedding_model} embeddings, "
                 f"coloured by {color_by}", fontsize=8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return {"chunks": len(ids), "color_by": color_by, "groups": {g: labels.count(g) for g in groups}}
