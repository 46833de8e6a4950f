"""Perplexity / model-score filter: every document is scored by a language model (per-token perplexity,
exp of the mean next-token NLL) and dropped above an absolute threshold or outside the best percentile —
the model-based quality filter of CCNet (Wenzek et al. 2019, "CCNet: Extracting High Quality Monolingual
Datasets from Web Crawl Data"), here with any lmforge model. A global step: a percentile needs every score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmforge.common.errors import ConfigError
from lmforge.data.validate import in_range

if TYPE_CHECKING:  # torch is imported when a model scores text, not by every `lmforge data` command (2 s)
    import torch


@dataclass(frozen=True)
class PerplexityConfig:
    """model: an lmforge model name or path (loaded with `lmforge.formats.loader.load`, only when first needed).
    max_perplexity: drop documents scoring above it (None: no absolute threshold).
    keep_percentile: keep documents up to this percentile of the run's scores, e.g. 90 drops the worst 10%
    (None: no percentile cut). With neither, the step only records scores.
    max_tokens: tokens scored per document (the start of it; BOS included). batch_size: documents per forward.
    prepend_bos: put the tokenizer's BOS first so the first word is scored too. meta_key: metadata field
    the score is written to. dtype: the model's weights dtype when loaded by name.
    """

    model: str = "smollm2-135m"
    max_perplexity: float | None = None
    keep_percentile: float | None = None
    max_tokens: int = 512
    batch_size: int = 4
    prepend_bos: bool = True
    meta_key: str = "perplexity"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model={self.model!r} must be an lmforge model name or a path")
        if self.max_perplexity is not None:
            in_range("max_perplexity", self.max_perplexity, 1.0)
        if self.keep_percentile is not None:
            in_range("keep_percentile", self.keep_percentile, 0.0, 100.0)
            if self.keep_percentile == 0:
                raise ConfigError("keep_percentile=0 would drop every document; allowed: (0, 100]")
        in_range("max_tokens", self.max_tokens, 2)
        in_range("batch_size", self.batch_size, 1)
        if not isinstance(self.meta_key, str) or not self.meta_key:
            raise ConfigError(f"meta_key={self.meta_key!r} must be a non-empty string")


class PerplexityScorer:
    """Per-token perplexity of texts under `model` (logits [B, T, V] from `model(ids, attention_mask=...)`)."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_tokens: int = 512, batch_size: int = 4,
                 prepend_bos: bool = True) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.bos_id = tokenizer.bos_token_id if prepend_bos else None
        self.pad_id = tokenizer.pad_token_id or tokenizer.eos_token_id or 0
        self.device = next(model.parameters()).device

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids as scored: BOS (if any) + the text's tokens, cut to max_tokens."""
        prefix = [self.bos_id] if self.bos_id is not None else []
        return [(prefix + ids)[: self.max_tokens] for ids in self.tokenizer.encode_batch(texts,
                                                                                       add_special_tokens=False)]

    def nll_batch(self, batch: list[list[int]]) -> list[tuple[float, int]]:
        """(summed next-token NLL, number of predicted tokens) per sequence; right padding with a key mask."""
        import torch

        with torch.inference_mode():
            return self._nll_batch(batch)

    def _nll_batch(self, batch: list[list[int]]) -> list[tuple[float, int]]:
        import torch
        import torch.nn.functional as F

        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(ids, attention_mask=mask).float()
        target_mask = mask[:, 1:].float()
        # one row at a time: a full [B, T, V] log-softmax would double the peak memory of large vocabularies
        nll = torch.stack([F.cross_entropy(logits[r, :-1], ids[r, 1:], reduction="none") for r in range(len(batch))])
        totals = (nll * target_mask).sum(dim=1)
        counts = target_mask.sum(dim=1)
        return [(float(t), int(c)) for t, c in zip(totals.cpu(), counts.cpu(), strict=True)]

    def iter_scores(self, texts: Iterable[str], chunk: int = 64) -> Iterator[float]:
        """Perplexity of each text in order (inf when fewer than two tokens leave nothing to predict).

        Texts are taken `chunk` at a time and sorted by length inside the chunk, so batches pad little.
        """
        pending: list[str] = []
        for text in texts:
            pending.append(text)
            if len(pending) >= chunk:
                yield from self._score_chunk(pending)
                pending = []
        if pending:
            yield from self._score_chunk(pending)

    def scores(self, texts: Iterable[str]) -> list[float]:
        return list(self.iter_scores(texts))

    def _score_chunk(self, texts: list[str]) -> list[float]:
        seqs = self.token_ids(texts)
        out = [math.inf] * len(seqs)
        order = sorted((i for i, s in enumerate(seqs) if len(s) >= 2), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            for i, (total, count) in zip(rows, self.nll_batch([seqs[i] for i in rows]), strict=True):
                out[i] = math.exp(total / count)
        return out


class PerplexityFilter:
    """The global step: `find_removals(texts)` scores every text, then drops by threshold and/or percentile;
    `annotations()` gives {index: {meta_key: score}} for the pipeline to record in each document's metadata.
    Pass `model` and `tokenizer` to use an already loaded model (tests); otherwise `config.model` is loaded.
    """

    name = "perplexity"

    def __init__(self, config: PerplexityConfig | None = None, model: torch.nn.Module | None = None,
                 tokenizer=None) -> None:
        self.config = config or PerplexityConfig()
        if (model is None) != (tokenizer is None):
            raise ConfigError("pass both model and tokenizer, or neither (then config.model is loaded)")
        self._model, self._tokenizer = model, tokenizer
        self._scores: list[float] = []

    def scorer(self) -> PerplexityScorer:
        if self._model is None:
            from lmforge.formats.loader import load  # loading a model is slow: only when the step runs

            lm = load(self.config.model, dtype=self.config.dtype)
            if lm.tokenizer is None:
                raise ConfigError(f"model={self.config.model!r} has no tokenizer to score text with")
            self._model, self._tokenizer = lm.model, lm.tokenizer
        cfg = self.config
        return PerplexityScorer(self._model, self._tokenizer, cfg.max_tokens, cfg.batch_size, cfg.prepend_bos)

    def cutoff(self, scores: list[float]) -> float:
        """The largest perplexity kept: the threshold, the percentile of the finite scores, or the smaller."""
        cut = math.inf if self.config.max_perplexity is None else float(self.config.max_perplexity)
        finite = np.array([s for s in scores if math.isfinite(s)])
        if self.config.keep_percentile is not None and finite.size:
            cut = min(cut, float(np.percentile(finite, self.config.keep_percentile, method="higher")))
        return cut

    def find_removals(self, texts: Iterable[str]) -> dict[int, str]:
        self._scores = self.scorer().scores(texts)
        limit = self.config.max_perplexity if self.config.max_perplexity is not None else math.inf
        cut = self.cutoff(self._scores)
        removals: dict[int, str] = {}
        for i, score in enumerate(self._scores):
            if not math.isfinite(score):
                removals[i] = f"{self.name}:too_short"
            elif score > limit:
                removals[i] = f"{self.name}:above_threshold"
            elif score > cut:
                removals[i] = f"{self.name}:above_percentile"
        return removals

    def annotations(self) -> dict[int, dict]:
        """{index: {meta_key: perplexity or None}} for the texts of the last `find_removals` call."""
        key = self.config.meta_key
        return {i: {key: round(s, 4) if math.isfinite(s) else None} for i, s in enumerate(self._scores)}
