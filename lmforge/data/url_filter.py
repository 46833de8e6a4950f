"""URL filter: drop documents whose source URL is on a domain blocklist or contains a banned word,
as in the RefinedWeb/FineWeb recipes (Penedo et al. 2023, "The RefinedWeb Dataset for Falcon LLM", §G.1).
The built-in lists are tiny examples; pass `blocklist_file` for a real list (one domain per line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lmforge.common.errors import ConfigError
from lmforge.data.document import KEEP, Document, Drop, Verdict, drop
from lmforge.data.validate import one_of

DEFAULT_BLOCKED_DOMAINS = ("spam.example", "casino-bonus.example", "pills-online.example")
DEFAULT_BLOCKED_WORDS = ("porn", "xxx", "casino", "viagra", "escort", "hentai")
ON_MISSING = ("keep", "drop")


@dataclass(frozen=True)
class UrlFilterConfig:
    """url_field: where the URL lives in the record. blocked_domains: a host equal to or under any of these
    is dropped. blocked_words: whole tokens of the URL (split on non-alphanumerics) that drop it.
    blocked_regex: an extra regular expression searched in the lower-cased URL ('' for none).
    blocklist_file: extra domains, one per line. on_missing: what to do when a document has no URL.
    """

    url_field: str = "url"
    blocked_domains: tuple[str, ...] = DEFAULT_BLOCKED_DOMAINS
    blocked_words: tuple[str, ...] = DEFAULT_BLOCKED_WORDS
    blocked_regex: str = ""
    blocklist_file: str = ""
    on_missing: str = "keep"

    def __post_init__(self) -> None:
        one_of("on_missing", self.on_missing, ON_MISSING)
        object.__setattr__(self, "blocked_domains", tuple(d.lower().strip(".") for d in self.blocked_domains))
        object.__setattr__(self, "blocked_words", tuple(w.lower() for w in self.blocked_words))
        if self.blocked_regex:
            try:
                re.compile(self.blocked_regex)
            except re.error as err:
                raise ConfigError(f"blocked_regex={self.blocked_regex!r} is not a valid regex: {err}") from err
        if self.blocklist_file and not Path(self.blocklist_file).is_file():
            raise ConfigError(f"blocklist_file={self.blocklist_file!r} does not exist")


class UrlFilter:
    """`check_url(url)` returns KEEP or a drop Verdict ('blocked_domain', 'blocked_word', 'blocked_regex')."""

    name = "url_filter"

    def __init__(self, config: UrlFilterConfig | None = None) -> None:
        self.config = cfg = config or UrlFilterConfig()
        domains = set(cfg.blocked_domains)
        if cfg.blocklist_file:
            lines = Path(cfg.blocklist_file).read_text(encoding="utf-8").splitlines()
            domains.update(d.strip().lower().strip(".") for d in lines if d.strip() and not d.startswith("#"))
        self._domains = frozenset(domains)
        self._words = frozenset(cfg.blocked_words)
        self._regex = re.compile(cfg.blocked_regex) if cfg.blocked_regex else None

    def check_url(self, url: str) -> Verdict:
        lower = url.lower()
        host = (urlsplit(lower if "//" in lower else "//" + lower).hostname or "").strip(".")
        parts = host.split(".")
        if any(".".join(parts[i:]) in self._domains for i in range(len(parts))):
            return drop("blocked_domain")
        if self._words.intersection(re.split(r"[^a-z0-9]+", lower)):
            return drop("blocked_word")
        if self._regex is not None and self._regex.search(lower):
            return drop("blocked_regex")
        return KEEP

    def apply(self, doc: Document) -> Document | Drop:
        url = doc.meta.get(self.config.url_field)
        if not isinstance(url, str) or not url:
            return Drop(f"{self.name}:missing_url") if self.config.on_missing == "drop" else doc
        verdict = self.check_url(url)
        return doc if verdict.keep else Drop(f"{self.name}:{verdict.reason}")
