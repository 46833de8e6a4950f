"""Gopher repetition filter (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", table A1): duplicate line/paragraph fractions (by count and by characters), the share of
characters in the most frequent 2-4-gram, and the share of characters in duplicated 5-10-grams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lmforge.data.document import KEEP, Verdict, drop
from lmforge.data.text_stats import (
    UNITS,
    duplicate_ngram_char_fraction,
    duplicate_stats,
    nonempty_lines,
    normalized_words,
    paragraphs,
    resolve_unit,
    top_ngram_char_fraction,
)
from lmforge.data.validate import in_range, one_of

TOP_NGRAMS = ((2, 0.20), (3, 0.18), (4, 0.16))
DUP_NGRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
CHINESE_OVERRIDES = {
    "top_ngrams": tuple((2 * n, f) for n, f in TOP_NGRAMS),
    "dup_ngrams": tuple((2 * n, f) for n, f in DUP_NGRAMS),
    "unit": "char",
}


@dataclass(frozen=True)
class GopherRepetitionConfig:
    """Thresholds (Gopher defaults); a document above any of them is dropped.

    dup_line_fraction 0.30 and dup_para_fraction 0.30 (by count), dup_line_char_fraction 0.20 and
    dup_para_char_fraction 0.20 (by characters); top_ngrams: (n, max fraction) for the most frequent n-gram;
    dup_ngrams: (n, max fraction) for characters in duplicated n-grams. unit 'char' counts CJK characters.
    """

    dup_line_fraction: float = 0.30
    dup_para_fraction: float = 0.30
    dup_line_char_fraction: float = 0.20
    dup_para_char_fraction: float = 0.20
    top_ngrams: tuple[tuple[int, float], ...] = TOP_NGRAMS
    dup_ngrams: tuple[tuple[int, float], ...] = DUP_NGRAMS
    unit: str = "auto"

    def __post_init__(self) -> None:
        for name in ("dup_line_fraction", "dup_para_fraction", "dup_line_char_fraction", "dup_para_char_fraction"):
            in_range(name, getattr(self, name), 0.0, 1.0)
        one_of("unit", self.unit, UNITS)
        for field_name in ("top_ngrams", "dup_ngrams"):
            pairs = tuple((int(n), float(f)) for n, f in getattr(self, field_name))
            for n, frac in pairs:
                in_range(f"{field_name} n", n, 1)
                in_range(f"{field_name} fraction", frac, 0.0, 1.0)
            object.__setattr__(self, field_name, pairs)

    @classmethod
    def for_chinese(cls) -> GopherRepetitionConfig:
        """Character-based variant: n-grams of characters, twice as long as the word n-grams.
        With unit='auto', CJK documents are judged with these values."""
        return cls(**CHINESE_OVERRIDES)


class GopherRepetitionFilter:
    """`check(text)` returns KEEP or a drop Verdict naming the repetition statistic that failed."""

    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig | None = None) -> None:
        self.config = config or GopherRepetitionConfig()
        self._cjk = dataclasses.replace(self.config, **CHINESE_OVERRIDES)

    def check(self, text: str) -> Verdict:
        unit = resolve_unit(text, self.config.unit)
        cfg = self._cjk if unit == "char" and self.config.unit == "auto" else self.config
        paras = paragraphs(text)
        if paras:
            dup_n, dup_chars = duplicate_stats(paras)
            if dup_n / len(paras) > cfg.dup_para_fraction:
                return drop("dup_para_fraction")
            if dup_chars / max(1, sum(len(p) for p in paras)) > cfg.dup_para_char_fraction:
                return drop("dup_para_char_fraction")
        lines = nonempty_lines(text)
        if lines:
            dup_n, dup_chars = duplicate_stats(lines)
            if dup_n / len(lines) > cfg.dup_line_fraction:
                return drop("dup_line_fraction")
            if dup_chars / max(1, sum(len(line) for line in lines)) > cfg.dup_line_char_fraction:
                return drop("dup_line_char_fraction")
        words = normalized_words(text, unit)
        for n, limit in cfg.top_ngrams:
            if top_ngram_char_fraction(words, n) > limit:
                return drop(f"top_{n}gram_fraction")
        for n, limit in cfg.dup_ngrams:
            if duplicate_ngram_char_fraction(words, n) > limit:
                return drop(f"dup_{n}gram_fraction")
        return KEEP
