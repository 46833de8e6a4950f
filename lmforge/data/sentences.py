"""Sentence counting for the C4 page rule: a full stop ends a sentence unless it closes an abbreviation ("e.g.",
"U.S.", "Dr.", an initial) or the next word starts in lower case -- the cases Punkt (which TFDS's C4 code uses)
learns to skip. CJK full stops always end a sentence.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "al", "inc", "ltd", "co", "corp",
    "no", "nos", "vol", "fig", "figs", "approx", "dept", "est", "gen", "gov", "rev",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
))
_CLOSERS = "\"'”’)]»」』"
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]\.?")  # e.g / i.e / u.s / u.s.a
_CJK_BOUNDARY = re.compile(r"[。！？]+[”」』]?(?=\s*[^\s”」』])")  # a CJK end with more text after it


def _is_abbreviation(word: str) -> bool:
    bare = word.rstrip(".").lower()
    return bare in ABBREVIATIONS or bool(_DOTTED.fullmatch(word.lower())) or (len(bare) == 1 and bare.isalpha())


def count_sentences(line: str) -> int:
    """Sentences in one line: 1 for a non-empty line, plus one per sentence boundary inside it."""
    line = line.strip()
    if not line:
        return 0
    tokens = line.split()
    count = 1
    for word, following in zip(tokens[:-1], tokens[1:], strict=True):
        core = word.rstrip(_CLOSERS)
        if not core.endswith((".", "!", "?")) or following[0].islower():
            continue
        if core.endswith(".") and not core.endswith("..") and _is_abbreviation(core):
            continue
        count += 1
    return count + len(_CJK_BOUNDARY.findall(line))
