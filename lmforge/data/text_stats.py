"""Text statistics shared by the Gopher, C4 and FineWeb heuristic filters.

Words are whitespace tokens ("word" unit) or, for Chinese and other CJK text, single Han/kana/hangul
characters plus runs of Latin letters or digits ("char" unit), since such text has no spaces.
"""

from __future__ import annotations

import re
import string
from collections import Counter

CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CHAR_TOKEN_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W\d_]+|\d+", re.UNICODE
)
PUNCTUATION = set(string.punctuation) | set("。，、；：？！…「」『』（）《》“”‘’·—")
UNITS = ("auto", "word", "char")


def cjk_fraction(text: str) -> float:
    """Fraction of non-space characters that are CJK ideographs, kana or hangul."""
    chars = sum(1 for c in text if not c.isspace())
    return len(CJK_RE.findall(text)) / chars if chars else 0.0


def resolve_unit(text: str, unit: str) -> str:
    """'word' or 'char': 'auto' picks 'char' when over 30% of the characters are CJK."""
    if unit != "auto":
        return unit
    return "char" if cjk_fraction(text) > 0.3 else "word"


def split_words(text: str, unit: str = "word") -> list[str]:
    """Raw tokens: whitespace-separated words, or CJK characters and Latin/digit runs."""
    if unit == "char":
        return _CHAR_TOKEN_RE.findall(text)
    return text.split()


def normalized_words(text: str, unit: str = "word") -> list[str]:
    """Lower-cased tokens with surrounding punctuation stripped and empty ones removed (for n-gram stats)."""
    if unit == "char":
        return [w.lower() for w in _CHAR_TOKEN_RE.findall(text)]
    out = []
    for w in text.split():
        w = w.strip("".join(PUNCTUATION)).lower()
        if w:
            out.append(w)
    return out


def nonempty_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """(number of items, number of characters) that repeat an earlier item — Gopher's duplicate counts."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram (all its occurrences) over all word characters."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(w) for w in gram) * count / total


def duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of words inside any n-gram that repeats an earlier one (overlaps counted once)."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    marked = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            for j in range(i, i + n):
                marked[j] = True
        else:
            seen.add(gram)
    return sum(len(w) for w, m in zip(words, marked, strict=True) if m) / total
