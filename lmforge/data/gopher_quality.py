"""Gopher quality filter (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", appendix A.1.1): word count, mean word length, symbol/word ratio, bullet and ellipsis lines,
alphabetic words and stop words. Defaults are the paper's; `for_chinese()` counts characters instead.

Words are whitespace tokens; tokens made only of punctuation ("-", "...", "#") are not words for the count, the
mean length and the symbol ratio (the paper counts words; datatrove does the same with its own tokenizer).
The hash and the ellipsis ratios are checked separately: the paper drops a document when *either* exceeds 0.1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lmforge.data.document import KEEP, Verdict, drop
from lmforge.data.text_stats import PUNCTUATION, UNITS, nonempty_lines, resolve_unit, split_words
from lmforge.data.validate import in_range, one_of, ordered

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
CHINESE_STOP_WORDS = ("的", "了", "是", "在", "和", "有", "我", "不", "这", "也")
CHINESE_OVERRIDES = {"min_words": 100, "max_words": 200_000, "unit": "char"}
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·", "◦", "‣")
ELLIPSES = ("...", "…")


@dataclass(frozen=True)
class GopherQualityConfig:
    """Thresholds (Gopher defaults). A document is kept when every statistic is inside its bounds.

    min_words/max_words: 50..100,000 words. min/max_mean_word_length: 3..10 characters (word unit only).
    max_symbol_word_ratio: 0.1 hash symbols per word, and separately 0.1 ellipses per word.
    max_bullet_lines: 0.9 of lines start with a bullet. max_ellipsis_lines: 0.3 of lines end with an ellipsis.
    min_alpha_words: 0.8 of words hold a letter.
    min_stop_words: 2 distinct stop words present. unit: 'word', 'char' (CJK) or 'auto'.
    """

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = GOPHER_STOP_WORDS
    unit: str = "auto"
    chinese_stop_words: tuple[str, ...] = field(default=CHINESE_STOP_WORDS)

    def __post_init__(self) -> None:
        in_range("min_words", self.min_words, 0)
        ordered("min_words", self.min_words, "max_words", self.max_words)
        in_range("min_mean_word_length", self.min_mean_word_length, 0)
        ordered("min_mean_word_length", self.min_mean_word_length,
                "max_mean_word_length", self.max_mean_word_length)
        for name in ("max_symbol_word_ratio", "max_bullet_lines", "max_ellipsis_lines", "min_alpha_words"):
            in_range(name, getattr(self, name), 0.0, 1.0 if name != "max_symbol_word_ratio" else None)
        in_range("min_stop_words", self.min_stop_words, 0)
        one_of("unit", self.unit, UNITS)
        object.__setattr__(self, "stop_words", tuple(self.stop_words))
        object.__setattr__(self, "chinese_stop_words", tuple(self.chinese_stop_words))

    @classmethod
    def for_chinese(cls) -> GopherQualityConfig:
        """Character-based variant: 50 words become 100 characters; mean word length is not checked.
        With unit='auto', CJK documents are judged with these values."""
        return cls(**CHINESE_OVERRIDES)


class GopherQualityFilter:
    """`check(text)` returns KEEP or a drop Verdict with the first failing rule as reason."""

    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig | None = None) -> None:
        self.config = config or GopherQualityConfig()
        self._cjk = dataclasses.replace(self.config, **CHINESE_OVERRIDES)

    def check(self, text: str) -> Verdict:
        unit = resolve_unit(text, self.config.unit)
        cfg = self._cjk if unit == "char" and self.config.unit == "auto" else self.config
        words = split_words(text, unit)
        content = [w for w in words if not all(c in PUNCTUATION for c in w)]
        n = len(content)
        if n < cfg.min_words:
            return drop("too_few_words")
        if n > cfg.max_words:
            return drop("too_many_words")
        if unit == "word":
            mean_len = sum(len(w) for w in content) / n
            if mean_len < cfg.min_mean_word_length:
                return drop("mean_word_length_too_short")
            if mean_len > cfg.max_mean_word_length:
                return drop("mean_word_length_too_long")
        if text.count("#") / n > cfg.max_symbol_word_ratio:
            return drop("hash_word_ratio")
        if sum(text.count(e) for e in ELLIPSES) / n > cfg.max_symbol_word_ratio:
            return drop("ellipsis_word_ratio")
        lines = nonempty_lines(text)
        if lines:
            if sum(line.startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines:
                return drop("bullet_lines")
            if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines:
                return drop("ellipsis_lines")
        if sum(any(c.isalpha() for c in w) for w in words) / len(words) < cfg.min_alpha_words:
            return drop("alpha_words")
        if unit == "char":
            found = sum(1 for s in cfg.chinese_stop_words if s in text)
        else:
            vocab = {w.lower().strip(".,;:!?\"'()") for w in words}
            found = sum(1 for s in cfg.stop_words if s in vocab)
        if found < cfg.min_stop_words:
            return drop("stop_words")
        return KEEP
