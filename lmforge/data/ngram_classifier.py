"""A fastText-style text classifier (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"): word
uni- and bigrams hashed into buckets, their embeddings averaged (nn.EmbeddingBag) and a linear layer on top. The
model behind the quality and toxicity steps (as DCLM's and FineWeb-Edu's quality filters): trained in seconds on
a few hundred labelled pages, applied at thousands of documents per second on one core.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.minhash import TOKEN_RE
from lmforge.data.validate import in_range

CONFIG_FILE = "classifier.json"
MAX_TABLE = 1 << 27  # embedding values (fp32: 512 MiB)
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class NgramClassifierConfig:
    """buckets: hash buckets shared by all n-grams. dim: embedding size. ngrams: 1 = words, 2 = words + bigrams.
    max_tokens: words read per document (its start). epochs / lr / batch_size / seed: training (Adam)."""

    buckets: int = 1 << 18
    dim: int = 32
    ngrams: int = 2
    max_tokens: int = 2000
    epochs: int = 8
    lr: float = 0.05
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        in_range("buckets", self.buckets, 16, 1 << 24)
        in_range("dim", self.dim, 1, 1024)
        if self.buckets * self.dim > MAX_TABLE:  # a crafted classifier.json must not allocate gigabytes
            raise ConfigError(f"buckets x dim = {self.buckets * self.dim:,} embedding values; allowed at most "
                              f"{MAX_TABLE:,} (512 MiB)")
        in_range("ngrams", self.ngrams, 1, 3)
        in_range("max_tokens", self.max_tokens, 1)
        in_range("epochs", self.epochs, 1, 1000)
        in_range("lr", self.lr, 0.0)
        in_range("batch_size", self.batch_size, 1)


MIX = np.uint64(1_000_003)  # n-gram hash: h = h * MIX ^ next word's hash (uint64, wrapping), as fastText's


def features(text: str, config: NgramClassifierConfig) -> np.ndarray:
    """Bucket ids of the lower-cased word n-grams of `text`: crc32 per word (stable across processes, unlike
    hash()), n-grams mixed from their words' hashes in numpy."""
    words = TOKEN_RE.findall(text.lower())[: config.max_tokens] or [""]
    h = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    grams, g = [h], h
    for n in range(2, config.ngrams + 1):
        g = g[:-1] * MIX ^ h[n - 1 :]
        grams.append(g)
    return (np.concatenate(grams) % np.uint64(config.buckets)).astype(np.int64)


class NgramClassifier(nn.Module):
    """Mean of n-gram embeddings -> logits over `labels`."""

    def __init__(self, labels: list[str], config: NgramClassifierConfig) -> None:
        super().__init__()
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ConfigError(f"a classifier needs at least two distinct labels, got {labels}")
        self.labels = list(labels)
        self.config = config
        self.embed = nn.EmbeddingBag(config.buckets, config.dim, mode="mean", sparse=True)  # rows a batch touches
        self.head = nn.Linear(config.dim, len(labels))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids, offsets))

    def train(self, mode: bool = True) -> NgramClassifier:
        self._numpy = None  # weights may change: predict_proba re-reads them
        return super().train(mode)

    def predict_proba(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), len(labels)] class probabilities. In numpy: per document, torch's call overhead
        costs more than the arithmetic (a mean of a few hundred rows and a 32 x labels product)."""
        if getattr(self, "_numpy", None) is None:
            self._numpy = tuple(t.detach().numpy().copy() for t in (self.embed.weight, self.head.weight,
                                                                   self.head.bias))
        table, w, b = self._numpy
        if not texts:
            return torch.zeros(0, len(self.labels))
        hidden = np.stack([table[features(t, self.config)].mean(0) for t in texts])
        logits = hidden @ w.T + b
        logits -= logits.max(-1, keepdims=True)
        probs = np.exp(logits)
        return torch.from_numpy(probs / probs.sum(-1, keepdims=True))

    def score(self, texts: list[str], label: str) -> list[float]:
        """Probability of `label` for each text."""
        if label not in self.labels:
            raise ConfigError(f"label={label!r} is not one of the classifier's labels {self.labels}")
        return self.predict_proba(texts)[:, self.labels.index(label)].tolist()

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps({"labels": self.labels, "config": asdict(self.config)}, indent=1))
        return out

    @classmethod
    def load(cls, path: str | Path) -> NgramClassifier:
        from safetensors.torch import load_file

        root = Path(path)
        if not (root / CONFIG_FILE).is_file() or not (root / WEIGHTS_FILE).is_file():
            raise LmforgeError(f"{root} is not a classifier directory (needs {CONFIG_FILE} and {WEIGHTS_FILE}; "
                               "make one with `lmforge data quality train`)")
        meta = json.loads((root / CONFIG_FILE).read_text())
        model = cls(meta["labels"], NgramClassifierConfig(**meta["config"]))
        model.load_state_dict(load_file(str(root / WEIGHTS_FILE)))
        return model.eval()


def train_classifier(texts: list[str], labels: list[str], config: NgramClassifierConfig | None = None,
                     on_epoch=None) -> NgramClassifier:
    """Fit a classifier on (text, label) pairs; `on_epoch(epoch, mean_loss)` reports progress."""
    config = config or NgramClassifierConfig()
    if len(texts) != len(labels) or not texts:
        raise ConfigError(f"need as many labels as texts (got {len(texts)} texts, {len(labels)} labels), at least 1")
    names = sorted(set(labels))
    gen = torch.Generator().manual_seed(config.seed)
    model = NgramClassifier(names, config)
    with torch.no_grad():  # fastText's init: uniform in +-1/dim for the input vectors
        model.embed.weight.uniform_(-1.0 / config.dim, 1.0 / config.dim, generator=gen)
    target = torch.tensor([names.index(y) for y in labels])
    feats = [features(t, config) for t in texts]
    # Only the buckets a batch touches get gradients (sparse rows), as fastText's SGD updates only those.
    opts = [torch.optim.SparseAdam(model.embed.parameters(), lr=config.lr),
            torch.optim.Adam(model.head.parameters(), lr=config.lr)]
    order = list(range(len(texts)))
    rng = random.Random(config.seed)
    model.train()
    for epoch in range(config.epochs):
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            ids = torch.from_numpy(np.concatenate([feats[k] for k in idx]))
            offsets = torch.tensor([0] + [len(feats[k]) for k in idx[:-1]]).cumsum(0)
            loss = nn.functional.cross_entropy(model(ids, offsets), target[idx])
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            total += loss.item() * len(idx)
        if on_epoch:
            on_epoch(epoch, total / len(order))
    return model.eval()


def evaluate(model: NgramClassifier, texts: list[str], labels: list[str], positive: str,
             threshold: float = 0.5) -> dict:
    """Accuracy of the argmax label, and precision / recall of `positive` at P(positive) > threshold."""
    if positive not in model.labels:
        raise ConfigError(f"positive={positive!r} is not one of the classifier's labels {model.labels}")
    probs = model.predict_proba(texts)
    predicted = [model.labels[i] for i in probs.argmax(-1).tolist()]
    flagged = (probs[:, model.labels.index(positive)] > threshold).tolist()
    truth = [y == positive for y in labels]
    tp = sum(f and t for f, t in zip(flagged, truth, strict=True))
    return {
        "documents": len(texts),
        "accuracy": sum(p == y for p, y in zip(predicted, labels, strict=True)) / max(1, len(texts)),
        "positive": positive,
        "threshold": threshold,
        "precision": tp / max(1, sum(flagged)),
        "recall": tp / max(1, sum(truth)),
    }
