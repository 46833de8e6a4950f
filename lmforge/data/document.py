"""The unit of work of the data pipeline: a document, a keep/drop verdict and the step protocol.

Every step takes one `Document` and returns either a (possibly rewritten) document or a `Drop` naming why,
so each removal is auditable by reason, as in the Gopher/C4/FineWeb data recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Document:
    """One text with its identifier and whatever other fields the input record carried."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self, text_field: str = "text") -> dict[str, Any]:
        """The JSON-ready record: the original fields, the text under `text_field`, and the id."""
        record = dict(self.meta)
        record[text_field] = self.text
        record.setdefault("id", self.id)
        return record


@dataclass(frozen=True)
class Verdict:
    """A filter's answer: keep the document, or drop it for `reason` (a short snake_case label)."""

    keep: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.keep and not self.reason:
            raise ValueError("a drop Verdict needs a reason string")


KEEP = Verdict(True)


def drop(reason: str) -> Verdict:
    return Verdict(False, reason)


@dataclass(frozen=True)
class Drop:
    """What a pipeline step returns instead of a document when it removes it."""

    reason: str


@runtime_checkable
class Step(Protocol):
    """A per-document pipeline step: returns the document (maybe rewritten) or a `Drop`."""

    name: str

    def apply(self, doc: Document) -> Document | Drop: ...


class FilterStep:
    """Adapts anything with `check(text) -> Verdict` into a pipeline `Step`."""

    def __init__(self, name: str, check) -> None:
        self.name = name
        self._check = check

    def apply(self, doc: Document) -> Document | Drop:
        verdict = self._check(doc.text)
        return doc if verdict.keep else Drop(f"{self.name}:{verdict.reason}")


class MapStep:
    """Adapts a text-to-text function (normalisation, PII masking, extraction) into a pipeline `Step`.

    An empty result drops the document with reason `<name>:empty`.
    """

    def __init__(self, name: str, fn) -> None:
        self.name = name
        self._fn = fn

    def apply(self, doc: Document) -> Document | Drop:
        text = self._fn(doc.text)
        if not text.strip():
            return Drop(f"{self.name}:empty")
        return Document(doc.id, text, doc.meta)
