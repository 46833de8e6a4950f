"""Mixes the synthetic document kinds into a corpus: document i is a pure function of (seed, i), so any slice
is reproducible and generation can be split across workers. `unigram_entropy` gives the baseline a language
model must beat: the cross-entropy (nats/token) of predicting every token from its corpus frequency alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lmforge.common.errors import ConfigError
from lmforge.data.corpus.arithmetic import arithmetic
from lmforge.data.corpus.code import code
from lmforge.data.corpus.facts import facts
from lmforge.data.corpus.stories import story
from lmforge.data.document import Document
from lmforge.data.validate import in_range

KINDS = {"story": story, "arithmetic": arithmetic, "facts": facts, "code": code}


@dataclass(frozen=True)
class CorpusConfig:
    """documents: how many to generate. seed: the corpus seed. weights: share of each kind (story, arithmetic,
    facts, code), normalised. About 500 bytes (~130 tokens of a 4k byte-BPE) per document on average."""

    documents: int = 40_000
    seed: int = 0
    weights: tuple[float, float, float, float] = (0.55, 0.15, 0.15, 0.15)

    def __post_init__(self) -> None:
        in_range("documents", self.documents, 1)
        if len(self.weights) != len(KINDS) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"weights={self.weights!r} must be {len(KINDS)} non-negative numbers "
                              f"({', '.join(KINDS)}) with a positive sum")


def document_text(seed: int, index: int, weights=CorpusConfig.weights) -> tuple[str, str]:
    """(kind, text) of document `index` of the corpus with `seed`."""
    rng = random.Random(seed * 1_000_003 + index)
    kind = rng.choices(tuple(KINDS), weights=weights)[0]
    return kind, KINDS[kind](rng)


def corpus_documents(config: CorpusConfig = CorpusConfig(), start: int = 0) -> Iterator[Document]:
    """Documents start .. config.documents - 1, each with its kind in meta."""
    for i in range(start, config.documents):
        kind, text = document_text(config.seed, i, config.weights)
        yield Document(id=f"synthetic-{config.seed}-{i}", text=text, meta={"kind": kind})


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the token frequency distribution of `ids` (the best loss of a context-free model)."""
    counts = np.bincount(np.asarray(ids).ravel().astype(np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
