"""Exact deduplication: documents whose normalised text (NFKC, lower case, whitespace collapsed) hashes
(BLAKE2b-128) to one already seen are removed, keeping the first — the exact-match stage of
Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better".
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExactDedupConfig:
    """lowercase / collapse_whitespace / unicode_nfkc: the normalisation applied before hashing."""

    lowercase: bool = True
    collapse_whitespace: bool = True
    unicode_nfkc: bool = True


class ExactDedup:
    """A global step: `find_removals(texts)` returns {index: reason} for every later copy of a text."""

    name = "exact_dedup"

    def __init__(self, config: ExactDedupConfig | None = None) -> None:
        self.config = config or ExactDedupConfig()

    def normalize(self, text: str) -> str:
        cfg = self.config
        if cfg.unicode_nfkc:
            text = unicodedata.normalize("NFKC", text)
        if cfg.lowercase:
            text = text.lower()
        if cfg.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def digest(self, text: str) -> bytes:
        return hashlib.blake2b(self.normalize(text).encode("utf-8"), digest_size=16).digest()

    @property
    def reason(self) -> str:
        return f"{self.name}:duplicate"

    def find_removals(self, texts: Iterable[str]) -> dict[int, str]:
        seen: set[bytes] = set()
        removals: dict[int, str] = {}
        for index, text in enumerate(texts):
            key = self.digest(text)
            if key in seen:
                removals[index] = self.reason
            else:
                seen.add(key)
        return removals
