"""PII masking: e-mail addresses, phone numbers and IPv4/IPv6 addresses replaced by placeholders, in the
spirit of the BigScience ROOTS pipeline (Laurençon et al. 2022, "The BigScience ROOTS Corpus", §3.3).
Candidates from regular expressions are validated (digit counts, `ipaddress`) to limit false positives.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lmforge.data.document import Document, Drop

EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
PHONE_RE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_DATE_RE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


@dataclass(frozen=True)
class PiiConfig:
    """Which kinds to mask and their placeholders. Phone candidates need 7-15 digits and are not dates."""

    mask_emails: bool = True
    mask_phones: bool = True
    mask_ips: bool = True
    email_token: str = "<EMAIL>"
    phone_token: str = "<PHONE>"
    ip_token: str = "<IP_ADDRESS>"


def _valid_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _valid_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    return 7 <= digits <= 15 and not _DATE_RE.match(candidate.strip())


class PiiMasker:
    """`mask(text)` returns (masked text, counts per kind); `apply(doc)` records counts in `pii_masked`."""

    name = "pii"

    def __init__(self, config: PiiConfig | None = None) -> None:
        self.config = config or PiiConfig()

    def mask(self, text: str) -> tuple[str, dict[str, int]]:
        cfg = self.config
        counts = {"email": 0, "phone": 0, "ip": 0}

        def sub(pattern: re.Pattern, token: str, kind: str, valid=None) -> None:
            nonlocal text

            def repl(m: re.Match) -> str:
                if valid is not None and not valid(m.group(0)):
                    return m.group(0)
                counts[kind] += 1
                return token

            text = pattern.sub(repl, text)

        if cfg.mask_emails:
            sub(EMAIL_RE, cfg.email_token, "email")
        if cfg.mask_ips:  # before phones: an IPv4 address looks like a dotted number
            sub(IPV6_RE, cfg.ip_token, "ip", _valid_ip)
            sub(IPV4_RE, cfg.ip_token, "ip", _valid_ip)
        if cfg.mask_phones:
            sub(PHONE_RE, cfg.phone_token, "phone", _valid_phone)
        return text, counts

    def apply(self, doc: Document) -> Document | Drop:
        text, counts = self.mask(doc.text)
        if not any(counts.values()):
            return doc
        return Document(doc.id, text, {**doc.meta, "pii_masked": sum(counts.values())})
