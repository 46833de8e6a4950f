"""The detectors behind a safety policy, for one stage (input or output): word lists and patterns (regular
expressions, one compiled alternation per category), PII (the data pipeline's PII step, lmforge.data.pii) and a
learned classifier (an n-gram classifier trained with `lmforge safety train`). `scan` lists findings; `redact`
rewrites the spans whose category says redact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.pii import PiiMasker
from lmforge.safety.policy import Category, SafetyPolicy

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Finding:
    category: str
    action: str
    start: int
    end: int
    score: float = 1.0
    kind: str = "word"  # word | pattern | pii | classifier


def word_regex(word: str) -> str:
    """A word or phrase as a case-insensitive regex: runs of spaces match any whitespace; ASCII ends must be whole
    words ("kill" is not in "skill"), CJK ends need no boundary (Chinese has no spaces)."""
    body = r"\s+".join(re.escape(part) for part in word.split())
    left = r"(?<!\w)" if word.strip()[0].isascii() and word.strip()[0].isalnum() else ""
    right = r"(?!\w)" if word.strip()[-1].isascii() and word.strip()[-1].isalnum() else ""
    return left + body + right


def prefix_regex(word: str) -> str:
    """Matches any non-empty prefix of `word` (the whole word included): nested optional groups, c1(?:c2(?:c3)?)?.
    At the end of a streamed text, such a match is the part that might still become `word`."""
    pieces = []
    for part in word.split():
        pieces.append(r"\s+" if pieces else "")
        pieces.extend(re.escape(ch) for ch in part)
    pieces = [p for p in pieces if p]
    out = ""
    for piece in reversed(pieces):
        out = piece + (f"(?:{out})?" if out else "")
    left = r"(?<!\w)" if word.strip()[0].isascii() and word.strip()[0].isalnum() else ""
    return left + out


@lru_cache(maxsize=8)
def load_classifier(path: Path):
    from lmforge.data.ngram_classifier import NgramClassifier

    return NgramClassifier.load(path)


class Detector:
    """The checks of `policy` for one stage ("input" or "output"; None: every category, as moderation runs)."""

    def __init__(self, policy: SafetyPolicy, stage: str | None):
        self.policy, self.stage = policy, stage
        self.categories: list[Category] = [c for c in policy.categories if stage is None or c.applies(stage)]
        self.rules: list[tuple[Category, re.Pattern, str]] = []
        for cat in self.categories:
            if cat.words:
                self.rules.append((cat, re.compile("|".join(f"(?i:{word_regex(w)})" for w in cat.words)), "word"))
            self.rules += [(cat, re.compile(p), "pattern") for p in cat.patterns]  # each may set global flags
        self.pii = [c for c in self.categories if c.pii]
        self.pii_held = any(c.action != "flag" for c in self.pii)
        self.masker = PiiMasker()
        self.learned = [c for c in self.categories if c.classifier_label]
        self.classifier = load_classifier(policy.classifier) if self.learned else None
        if self.classifier is not None:
            missing = [c.classifier_label for c in self.learned if c.classifier_label not in self.classifier.labels]
            if missing:
                raise LmforgeError(f"{policy.source}: classifier labels {missing} are not among the classifier's "
                                   f"labels {self.classifier.labels}")
        # output text held back while it may still become a word that is blocked or redacted (flags need no hold)
        words = [w for c in self.categories if c.action != "flag" for w in c.words]
        self.word_prefix = re.compile("(?i:" + "|".join(prefix_regex(w) for w in words) + r")\Z") if words else None
        self.longest_word = max((len(w) for w in words), default=0)

    @property
    def active(self) -> bool:
        return bool(self.categories)

    def scan(self, text: str, classify: bool = True) -> list[Finding]:
        """Every finding in `text`: rule matches with their spans, PII, and classifier labels over the threshold."""
        found = []
        for cat, regex, kind in self.rules:
            found += [Finding(cat.name, cat.action, m.start(), m.end(), kind=kind)
                      for m in regex.finditer(text) if m.end() > m.start()]
        if self.pii:
            _, counts = self.masker.mask(text)
            if any(counts.values()):
                found += [Finding(c.name, c.action, 0, len(text), kind="pii") for c in self.pii]
        if classify and self.classifier is not None and text.strip():
            for cat, score in zip(self.learned, self.scores(text), strict=True):
                if score >= cat.threshold:
                    found.append(Finding(cat.name, cat.action, 0, len(text), score, "classifier"))
        return found

    def scores(self, text: str) -> list[float]:
        """P(label) of each classifier category for `text` (empty without a classifier)."""
        if self.classifier is None:
            return []
        probs = self.classifier.predict_proba([text])[0].tolist()
        return [probs[self.classifier.labels.index(c.classifier_label)] for c in self.learned]

    def redact(self, text: str, findings: list[Finding]) -> str:
        """`text` with redact-findings replaced: rule spans by [REDACTED], PII by the PII step's placeholders."""
        spans = sorted((f.start, f.end) for f in findings if f.action == "redact" and f.kind in ("word", "pattern"))
        out, pos = [], 0
        for start, end in spans:
            if start >= pos:
                out += [text[pos:start], REDACTED]
                pos = end
        text = "".join(out) + text[pos:]
        if any(f.action == "redact" and f.kind == "pii" for f in findings):
            text, _ = self.masker.mask(text)
        return text
