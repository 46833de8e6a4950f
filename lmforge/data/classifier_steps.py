"""Model-based pipeline steps: a quality classifier (the FineWeb-Edu / DCLM recipe: label a sample, train a small
classifier, keep what it scores high) and a toxicity filter, both backed by the fastText-style n-gram classifier
of `ngram_classifier.py`. The model is loaded on first use, so a Ray worker loads its own copy."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.data.document import Document, Drop
from lmforge.data.validate import in_range


def _check_strings(model: str, label: str, meta_key: str) -> None:
    for name, value in (("model", model), ("label", label), ("meta_key", meta_key)):
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
    if not label or not meta_key:
        raise ConfigError(f"label={label!r} and meta_key={meta_key!r} must be non-empty")


def _require_model(step: str, model: str) -> None:
    if not model:
        raise ConfigError(f"step {step!r} needs model = \"DIR\", a classifier directory written by "
                          "`lmforge data quality train`")


@dataclass(frozen=True)
class QualityClassifierConfig:
    """model: classifier directory. label: the class whose probability is the quality score ("good").
    min_score: documents scoring below it are dropped. meta_key: metadata field the score is written to."""

    model: str = ""
    label: str = "good"
    min_score: float = 0.5
    meta_key: str = "quality_score"

    def __post_init__(self) -> None:
        _check_strings(self.model, self.label, self.meta_key)
        in_range("min_score", self.min_score, 0.0, 1.0)


@dataclass(frozen=True)
class ToxicityConfig:
    """model: classifier directory. label: the toxic class. max_score: documents whose probability of `label`
    is above it are dropped. meta_key: metadata field the score is written to."""

    model: str = ""
    label: str = "toxic"
    max_score: float = 0.5
    meta_key: str = "toxicity"

    def __post_init__(self) -> None:
        _check_strings(self.model, self.label, self.meta_key)
        in_range("max_score", self.max_score, 0.0, 1.0)


class ClassifierStep:
    """Scores each document with the classifier, records the score, drops it when `keep(score)` is false."""

    def __init__(self, name: str, model: str, label: str, meta_key: str, keep, reason: str) -> None:
        self.name, self.model_path, self.label, self.meta_key = name, model, label, meta_key
        self._keep, self._reason = keep, reason
        self._model = None

    def _classifier(self):
        if self._model is None:
            from lmforge.data.ngram_classifier import NgramClassifier  # torch only when a document is scored

            self._model = NgramClassifier.load(self.model_path)
            self._model.score([""], self.label)  # checks the label now, with the step's name in the error
        return self._model

    def __getstate__(self) -> dict:  # Ray ships the step, not the loaded model
        return {**self.__dict__, "_model": None}

    def apply(self, doc: Document) -> Document | Drop:
        score = self._classifier().score([doc.text], self.label)[0]
        if not self._keep(score):
            return Drop(f"{self.name}:{self._reason}")
        return Document(doc.id, doc.text, {**doc.meta, self.meta_key: round(score, 4)})


def quality_step(config: QualityClassifierConfig) -> ClassifierStep:
    _require_model("quality_classifier", config.model)
    return ClassifierStep("quality_classifier", config.model, config.label, config.meta_key,
                          lambda s: s >= config.min_score, "low_score")


def toxicity_step(config: ToxicityConfig) -> ClassifierStep:
    _require_model("toxicity", config.model)
    return ClassifierStep("toxicity", config.model, config.label, config.meta_key,
                          lambda s: s <= config.max_score, "toxic")
