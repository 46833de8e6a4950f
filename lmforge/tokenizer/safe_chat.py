"""Chat encoding in which content never becomes control tokens (closes `<|im_start|>system` prompt injection).

Every string handed to the template — message content of every role, names, tool calls, `tools`, `documents` (RAG
chunks) — has its special-token strings swapped for private-use placeholder characters before rendering, so the
only real special tokens in the rendered text are the ones the template wrote. A conversation with no control
string in its content is then encoded in one call, exactly as before (and as transformers does); otherwise the
text is cut at the template's special tokens and the pieces, placeholders put back, are encoded with special-token
matching off (the `tokenizers` flag `encode_special_tokens`), so `<|im_end|>` typed by a user stays plain text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tokenizers import Tokenizer as Backend

# Unicode's Private Use Area: characters no real text needs; a free one stands for each control string.
_PRIVATE_USE = range(0xE000, 0xF900)
_PRIVATE_RE = re.compile("[\ue000-\uf8ff]")


def control_strings(backend: Backend) -> list[str]:
    """The special added tokens of `backend` (BOS/EOS, `<|im_start|>`, `<|eot_id|>`...), longest first."""
    tokens = {t.content for t in backend.get_added_tokens_decoder().values() if t.special and t.content}
    return sorted(tokens, key=lambda t: (-len(t), t))


def plain_backend(backend: Backend) -> Backend:
    """A copy of `backend` that reads special-token strings as ordinary text."""
    copy = Backend.from_str(backend.to_str())
    copy.encode_special_tokens = True
    return copy


class Escaper:
    """Swaps control strings inside untrusted values for placeholders, and back."""

    def __init__(self, controls: list[str], *texts: Any):
        self.controls = controls
        self.pattern = re.compile("|".join(re.escape(c) for c in controls)) if controls else None
        taken: set[str] = set()
        for text in texts:
            _collect_private(text, taken)
        self._free = (chr(c) for c in _PRIVATE_USE if chr(c) not in taken)
        self.mark_of: dict[str, str] = {}  # control string -> placeholder
        self.control_of: dict[str, str] = {}  # placeholder -> control string

    def escape(self, value: Any) -> Any:
        """`value` rebuilt with every control string in its strings (dict keys too) replaced by a placeholder."""
        if isinstance(value, str):
            if self.pattern is None or not self.pattern.search(value):
                return value
            return self.pattern.sub(lambda m: self._mark(m.group()), value)
        if isinstance(value, Mapping):
            return {self.escape(k): self.escape(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            items = [self.escape(v) for v in value]
            return tuple(items) if isinstance(value, tuple) else items
        return value

    def unescape(self, text: str) -> str:
        if not self.control_of:
            return text
        return re.sub("|".join(map(re.escape, self.control_of)), lambda m: self.control_of[m.group()], text)

    def _mark(self, control: str) -> str:
        if control not in self.mark_of:
            mark = next(self._free, None)
            if mark is None:  # 6,400 distinct control strings in one conversation: no vocabulary has that many
                raise ValueError("too many distinct special-token strings in one conversation")
            self.mark_of[control], self.control_of[mark] = mark, control
        return self.mark_of[control]


def _collect_private(value: Any, taken: set[str]) -> None:
    if isinstance(value, str):
        taken.update(_PRIVATE_RE.findall(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_private(key, taken)
            _collect_private(item, taken)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_private(item, taken)


def encode_rendered(rendered: str, escaper: Escaper, backend: Backend, plain: Backend) -> list[int]:
    """Ids of a chat rendered from escaped values: the template's special tokens are real, content stays text."""
    if not escaper.control_of or not any(mark in rendered for mark in escaper.control_of):
        # encode_batch releases the GIL (encode does not): a long chat does not stall a server's event loop
        return backend.encode_batch([rendered], add_special_tokens=False)[0].ids
    pieces, specials, pos = [], [], 0
    for match in escaper.pattern.finditer(rendered):  # only the template's own control strings are left
        pieces.append(rendered[pos:match.start()])
        specials.append(backend.token_to_id(match.group()))
        pos = match.end()
    pieces.append(rendered[pos:])
    encoded = encode_plain_pieces(pieces, escaper, plain)
    ids = list(encoded[0])
    for special, piece in zip(specials, encoded[1:], strict=True):
        ids.append(special)
        ids.extend(piece)
    return ids


def encode_plain_pieces(pieces: list[str], escaper: Escaper, plain: Backend) -> list[list[int]]:
    """Ids of escaped texts, placeholders put back and read as plain text. A vocabulary may hold a control string
    as an ordinary piece too (SentencePiece models keep `<s>` in theirs), which the model would pick for the plain
    text: then that occurrence is spelled from smaller pieces, so no control id comes out."""
    control_ids = {plain.token_to_id(c) for c in escaper.controls} - {None}
    texts = [escaper.unescape(p) for p in pieces]
    out = [e.ids for e in plain.encode_batch(texts, add_special_tokens=False)]
    for k, ids in enumerate(out):
        if control_ids.isdisjoint(ids) or not escaper.control_of:
            continue
        parts = re.split("(" + "|".join(map(re.escape, escaper.control_of)) + ")", pieces[k])
        out[k] = []
        for part in parts:
            if part in escaper.control_of:
                out[k] += _spell(escaper.control_of[part], plain, control_ids)
            elif part:
                out[k] += plain.encode(part, add_special_tokens=False).ids
    return out


def _spell(control: str, plain: Backend, control_ids: set[int]) -> list[int]:
    ids = plain.encode(control, add_special_tokens=False).ids
    if control_ids.isdisjoint(ids):
        return ids
    return [i for ch in control for i in plain.encode(ch, add_special_tokens=False).ids]
