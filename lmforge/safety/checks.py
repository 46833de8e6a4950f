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
from lmforge.safety.policy import ACTIONS, Category, SafetyPolicy

REDACTED = "[REDACTED]"
_MAYBE_PII = re.compile(r"[\d@:]")


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


def _units(word: str) -> list[str]:
    """A word as matching units: its lower-cased characters, and " " for each run of spaces."""
    units = []
    for part in word.lower().split():
        units += ([" "] if units else []) + list(part)
    return units


def _trie(words) -> dict:
    trie: dict = {}
    for word in words:
        node = trie
        for unit in _units(word):
            node = node.setdefault(unit, {})
        node[None] = {}  # a word ends here
    return trie


def _piece(unit: str) -> str:
    return r"\s+" if unit == " " else re.escape(unit)


def _top(alts: list[tuple[str, str]]) -> str:
    """The first level of a trie regex: words starting with an ASCII letter or digit must start a word, checked
    once per position by one look-behind before their alternatives (not once per word: that is 10x slower)."""
    words = [a for unit, a in alts if unit.isascii() and unit.isalnum()]
    other = [a for unit, a in alts if not (unit.isascii() and unit.isalnum())]
    parts = ([r"(?<!\w)(?:" + "|".join(words) + ")"] if words else []) + other
    return "(?:" + "|".join(parts) + ")"


def words_regex(words) -> str:
    """Matches any of `words` as a whole word or phrase (word_regex's rules), as one trie-shaped regex: each start
    position fails at its first character, however long the list. Longer words are tried first."""
    def build(node: dict, last: str) -> str:
        alts = [_piece(u) + build(child, u) for u, child in sorted((u, c) for u, c in node.items() if u is not None)]
        if None in node:
            alts.append(r"(?!\w)" if last.isascii() and last.isalnum() else "")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    trie = _trie(words)
    return _top([(u, _piece(u) + build(child, u)) for u, child in sorted(trie.items())])


def prefix_regex(words) -> str:
    """Matches any non-empty prefix of any of `words` (whole words included), trie-shaped
    (p(?:i(?:p(?:e)?)?|l(?:l)?)?...). At the end of a streamed text, such a match may still become a listed word."""
    def build(node: dict) -> str:
        return "|".join(alt for _, alt in branches(node))

    def branches(node: dict) -> list[tuple[str, str]]:
        out = []
        for unit, child in sorted((u, c) for u, c in node.items() if u is not None):
            rest = build(child) if any(u is not None for u in child) else ""
            out.append((unit, _piece(unit) + (f"(?:{rest})?" if rest else "")))
        return out

    return _top(branches(_trie(words)))


@lru_cache(maxsize=8)
def load_classifier(path: Path):
    from lmforge.data.ngram_classifier import NgramClassifier

    return NgramClassifier.load(path)


class Detector:
    """The checks of `policy` for one stage ("input" or "output"; None: every category, as moderation runs)."""

    def __init__(self, policy: SafetyPolicy, stage: str | None):
        self.policy, self.stage = policy, stage
        self.categories: list[Category] = [c for c in policy.categories if stage is None or c.applies(stage)]
        # every category's words in one trie-shaped regex; a match's category comes from its normalised text (the
        # most severe category when a word is listed in several)
        self.word_category: dict[str, Category] = {}
        for cat in sorted(self.categories, key=lambda c: ACTIONS.index(c.action)):
            for word in cat.words:
                self.word_category.setdefault(" ".join(word.lower().split()), cat)
        self.words = re.compile("(?i:" + words_regex(self.word_category) + ")") if self.word_category else None
        self.rules = [(c, re.compile(p)) for c in self.categories for p in c.patterns]  # each may set global flags
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
        self.word_prefix = re.compile("(?i:" + prefix_regex(words) + r")\Z") if words else None
        self.longest_word = max((len(w) for w in words), default=0)
        self.has_patterns = bool(self.rules)

    @property
    def active(self) -> bool:
        return bool(self.categories)

    def scan(self, text: str, classify: bool = True) -> list[Finding]:
        """Every finding in `text`: rule matches with their spans, PII, and classifier labels over the threshold."""
        found = []
        if self.words is not None:
            for m in self.words.finditer(text):
                cat = self.word_category[" ".join(m.group().lower().split())]
                found.append(Finding(cat.name, cat.action, m.start(), m.end(), kind="word"))
        for cat, regex in self.rules:
            found += [Finding(cat.name, cat.action, m.start(), m.end(), kind="pattern")
                      for m in regex.finditer(text) if m.end() > m.start()]
        if self.pii and _MAYBE_PII.search(text):  # e-mails need '@', phones and IPs digits or ':'
            found += self._pii(text)
        if classify and self.classifier is not None and text.strip():
            for cat, score in zip(self.learned, self.scores(text), strict=True):
                if score >= cat.threshold:
                    found.append(Finding(cat.name, cat.action, 0, len(text), score, "classifier"))
        return found

    def _pii(self, text: str) -> list[Finding]:
        _, counts = self.masker.mask(text)
        return [Finding(c.name, c.action, 0, len(text), kind="pii") for c in self.pii] if any(counts.values()) else []

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
