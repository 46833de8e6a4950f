"""C4 clean-up rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", JMLR, section 2.2, and TFDS's c4_utils.clean_page, the code that built C4): remove
Wikipedia citation markers, keep only lines ending in terminal punctuation (not an ellipsis) with at least 5 words,
drop javascript/cookie-policy lines, and drop pages with "lorem ipsum", a curly bracket or under 3 sentences.

Where the sources differ: the paper drops a page that contains "lorem ipsum" or "{" anywhere; TFDS only looks at
lines that survived the line rules. lmforge follows the paper (a page of code is dropped even when its braces sit
on lines without a full stop). Sentences are counted per kept line (as TFDS does), see `sentences.py`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from lmforge.data.document import KEEP, Document, Drop, Verdict, drop
from lmforge.data.sentences import count_sentences
from lmforge.data.text_stats import UNITS, resolve_unit, split_words
from lmforge.data.validate import in_range, one_of

TERMINAL_PUNCTUATION = (".", "!", "?", '"', "”", "。", "！", "？", "」", "』")  # TFDS: . ? ! " (+ CJK, curly quote)
ELLIPSES = ("...", "…")  # a line ending in one is unfinished (TFDS drops "..."; "…" is not terminal)
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")  # TFDS's _CITATION_REGEX
POLICY_SUBSTRINGS = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies",
)
CHINESE_OVERRIDES = {"min_words_per_line": 5, "unit": "char"}


@dataclass(frozen=True)
class C4Config:
    """C4 defaults. Line rules rewrite the text; page rules drop the document.

    terminal_punctuation: a kept line must end with one of these (and not with an ellipsis).
    min_words_per_line: 5, as the paper ("only retained lines that contained at least 5 words") and TFDS's
    _MIN_WORDS_PER_LINE (characters for unit 'char'). max_word_length: 1000 (a longer token drops the line;
    TFDS). min_sentences: 3 per page (paper: "discarded any page with fewer than 3 sentences"; TFDS
    _MIN_NUM_SENTENCES). datatrove's defaults swap the two (3 words, 5 sentences).
    remove_citations: strip "[1]", "[edit]", "[citation needed]" before the line rules (TFDS).
    filter_javascript / filter_policy: drop lines mentioning javascript / cookie and terms policies.
    filter_lorem_ipsum / filter_curly_bracket: drop pages containing "lorem ipsum" / "{".
    """

    terminal_punctuation: tuple[str, ...] = TERMINAL_PUNCTUATION
    min_words_per_line: int = 5
    max_word_length: int = 1000
    min_sentences: int = 3
    remove_citations: bool = True
    filter_javascript: bool = True
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    unit: str = "auto"

    def __post_init__(self) -> None:
        in_range("min_words_per_line", self.min_words_per_line, 0)
        in_range("max_word_length", self.max_word_length, 1)
        in_range("min_sentences", self.min_sentences, 0)
        one_of("unit", self.unit, UNITS)
        object.__setattr__(self, "terminal_punctuation", tuple(self.terminal_punctuation))

    @classmethod
    def for_chinese(cls) -> C4Config:
        """Character-based variant: a kept line needs at least 5 characters.
        With unit='auto', CJK documents are judged with these values."""
        return cls(**CHINESE_OVERRIDES)


class C4Filter:
    """`clean(text)` returns (kept lines joined, Verdict); `apply(doc)` is the pipeline step."""

    name = "c4"

    def __init__(self, config: C4Config | None = None) -> None:
        self.config = config or C4Config()
        self._cjk = dataclasses.replace(self.config, **CHINESE_OVERRIDES)

    def _clean_line(self, line: str, unit: str, cfg: C4Config) -> str | None:
        """The line with its citation markers removed, or None when a line rule drops it (TFDS's order)."""
        if any(len(w) > cfg.max_word_length for w in line.split()):
            return None
        if cfg.remove_citations:
            line = CITATION_RE.sub("", line).strip()
        if not line.endswith(cfg.terminal_punctuation) or line.endswith(ELLIPSES):
            return None
        if len(split_words(line, unit)) < cfg.min_words_per_line:
            return None
        lower = line.lower()
        if cfg.filter_javascript and "javascript" in lower:
            return None
        if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
            return None
        return line

    def clean(self, text: str) -> tuple[str, Verdict]:
        unit = resolve_unit(text, self.config.unit)
        cfg = self._cjk if unit == "char" and self.config.unit == "auto" else self.config
        lower = text.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return "", drop("lorem_ipsum")
        if cfg.filter_curly_bracket and "{" in text:
            return "", drop("curly_bracket")
        kept: list[str] = []
        sentences = 0
        for raw in text.split("\n"):
            line = raw.strip()
            if not line:  # keep paragraph breaks (one blank line) between kept lines
                if kept and kept[-1]:
                    kept.append("")
            elif (cleaned_line := self._clean_line(line, unit, cfg)) is not None:
                kept.append(cleaned_line)
                sentences += count_sentences(cleaned_line)
        cleaned = "\n".join(kept).strip()
        if not cleaned:
            return "", drop("no_lines_left")
        if sentences < cfg.min_sentences:
            return "", drop("too_few_sentences")
        return cleaned, KEEP

    def check(self, text: str) -> Verdict:
        return self.clean(text)[1]

    def apply(self, doc: Document) -> Document | Drop:
        cleaned, verdict = self.clean(doc.text)
        if not verdict.keep:
            return Drop(f"{self.name}:{verdict.reason}")
        return Document(doc.id, cleaned, doc.meta)
