"""Input and output rails (NeMo Guardrails' idea, lmforge's policy): inputs are checked whole before generation;
the output is checked while it streams, behind a hold-back window, so a blocked span never leaves.

The window is as small as the policy allows: the end of the text that could still grow into a listed word
("pipe bo" for "pipe bomb"), the last word when PII is redacted (an e-mail address is whole at the next space),
and `hold_back` characters when the policy has output patterns or a classifier (their matches cannot be predicted
from a prefix). A block stops the answer (finish_reason "content_filter"); redact rewrites before release; flag
only counts. A classifier finding whose category says redact blocks (there is no span to redact).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from lmforge.safety.checks import Detector, Finding
from lmforge.safety.policy import SafetyPolicy, load_policy

CONTENT_FILTER = "content_filter"  # OpenAI's finish_reason for a filtered answer
# The end of a text that may be an unfinished e-mail, IP address or phone number ("+1 555 12").
_PII_TAIL = re.compile(r"(?:[+(]?\d[\d()\-. ]*)?[A-Za-z0-9.+@:%_\[\]-]*\Z")
_CLASSIFY_EVERY = 16  # output characters between classifier runs
_CLASSIFY_CONTEXT = 512  # characters of released text the classifier also reads


def _blocks(f: Finding) -> bool:
    return f.action == "block" or (f.action == "redact" and f.kind == "classifier")


@dataclass
class InputVerdict:
    blocked: bool
    texts: list[str]  # the inputs, redacted where the policy says so
    findings: list[Finding] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return sorted({f.category for f in self.findings})


class Rails:
    """A policy's input check and a factory of output rails; `counts` tallies findings by (stage, category)."""

    def __init__(self, policy: SafetyPolicy | None = None):
        self.policy = policy or load_policy()
        self.input = Detector(self.policy, "input")
        self.output = Detector(self.policy, "output")
        self.counts: Counter = Counter()

    @classmethod
    def from_file(cls, path) -> Rails:
        return cls(load_policy(path))

    @property
    def refusal(self) -> str:
        return self.policy.refusal

    def check_input(self, texts: list[str]) -> InputVerdict:
        findings, out = [], []
        for text in texts:
            found = self.input.scan(text) if self.input.active else []
            findings += found
            out.append(self.input.redact(text, found) if any(f.action == "redact" for f in found) else text)
        self._count("input", findings)
        return InputVerdict(any(_blocks(f) for f in findings), out, findings)

    def output_rail(self) -> OutputRail:
        return OutputRail(self)

    def _count(self, stage: str, findings: list[Finding]) -> None:
        for category in {f.category for f in findings}:
            self.counts[stage, category] += 1


class OutputRail:
    """One answer's output check: `feed(delta)` returns the text that may be shown now ('' while held back);
    `finish()` the rest. After a block, `blocked` is True and nothing more is released."""

    def __init__(self, rails: Rails):
        self.rails, self.detector = rails, rails.output
        self.released = ""  # text shown, after redaction
        self.pending = ""  # text received, not shown yet
        self.blocked = False
        self.findings: list[Finding] = []
        self._unclassified = 0
        d = self.detector
        self._fixed_hold = rails.policy.hold_back if (any(c.patterns for c in d.categories) or d.classifier) else 0
        # released text re-read with the new text: enough for a word (or, with output patterns, a pattern) to span
        self._context = max(2 * d.longest_word + 16, rails.policy.hold_back, 64 if d.has_patterns else 0)

    def feed(self, delta: str) -> str:
        if self.blocked or not self.detector.active:
            return "" if self.blocked else delta
        self.pending += delta
        self._unclassified += len(delta)
        return self._release(final=False)

    def finish(self) -> str:
        if self.blocked or not self.detector.active:
            return ""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        d = self.detector
        context = self.released[-self._context:]
        window = context + self.pending
        # a word match touching the end may still grow ("bomb" -> "bombastic"): it is held, and judged next time
        found = [f for f in d.scan(window, classify=False) if f.end > len(context)
                 and (final or f.kind != "word" or f.end < len(window))]
        classify = d.classifier is not None and (final or self._unclassified >= _CLASSIFY_EVERY)
        if classify:
            self._unclassified = 0
            text = self.released[-_CLASSIFY_CONTEXT:] + self.pending
            found += [f for f in d.scan(text) if f.kind == "classifier"]
        if found:
            self._record(found)
        if any(_blocks(f) for f in found):
            self.blocked, self.pending = True, ""
            return ""
        spans = [f for f in found if f.action == "redact" and f.kind in ("word", "pattern")]
        if spans:  # redact inside the pending text (a span reaching into released text loses its pending part)
            shifted = [Finding(f.category, f.action, max(0, f.start - len(context)), f.end - len(context),
                               kind=f.kind) for f in spans]
            self.pending = d.redact(self.pending, shifted)
        hold = 0 if final else self._hold(window if not spans else context + self.pending, classify)
        cut = len(self.pending) - min(hold, len(self.pending))
        chunk, self.pending = self.pending[:cut], self.pending[cut:]
        if chunk and any(f.kind == "pii" and f.action == "redact" for f in found):
            chunk = d.redact(chunk, [f for f in found if f.kind == "pii"])
        self.released += chunk
        return chunk

    def _hold(self, window: str, classified: bool) -> int:
        d, hold = self.detector, self._fixed_hold
        if d.classifier is not None and not classified:
            return len(self.pending)  # only classified text is released
        if d.word_prefix is not None:
            m = d.word_prefix.search(window, max(0, len(window) - 2 * d.longest_word - 16))
            if m:
                hold = max(hold, len(window) - m.start())
        if d.pii_held:
            m = _PII_TAIL.search(window, max(0, len(window) - 80))
            if m:
                hold = max(hold, len(window) - m.start())
        return hold

    def _record(self, found: list[Finding]) -> None:
        new = [f for f in found if f.category not in {g.category for g in self.findings}]
        self.findings += new
        self.rails._count("output", new)
