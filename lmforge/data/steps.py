"""The step registry: every pipeline step type by name, with its config dataclass, so a TOML table
`{type = "gopher_quality", min_words = 80}` becomes a configured step. Dedup and perplexity steps are "global":
they see every document of the previous stage before deciding; the others work one document at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from lmforge.common.errors import ConfigError
from lmforge.data.c4_filter import C4Config, C4Filter
from lmforge.data.classifier_steps import QualityClassifierConfig, ToxicityConfig, quality_step, toxicity_step
from lmforge.data.document import FilterStep, MapStep, Step
from lmforge.data.exact_dedup import ExactDedup, ExactDedupConfig
from lmforge.data.fineweb_filter import FineWebConfig, FineWebFilter
from lmforge.data.gopher_quality import GopherQualityConfig, GopherQualityFilter
from lmforge.data.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from lmforge.data.html_extract import HtmlExtractConfig, HtmlExtractor
from lmforge.data.langid import LangIdConfig, LanguageIdentifier
from lmforge.data.minhash import MinHashConfig, MinHashDeduper
from lmforge.data.normalize import NormalizeConfig, Normalizer
from lmforge.data.perplexity_filter import PerplexityConfig, PerplexityFilter
from lmforge.data.pii import PiiConfig, PiiMasker
from lmforge.data.url_filter import UrlFilter, UrlFilterConfig


class GlobalStep(Protocol):
    """A step that needs the whole corpus: returns {document index: reason} for the documents to remove."""

    name: str

    def find_removals(self, texts: Iterable[str]) -> dict[int, str]: ...

    # Optional: `annotations() -> {document index: {field: value}}` after find_removals, merged by the pipeline
    # into each document's metadata (the perplexity step records its score this way).


@dataclass(frozen=True)
class StepType:
    config: type
    build: Callable[[Any], Any]
    is_global: bool = False


STEP_TYPES: dict[str, StepType] = {
    "url_filter": StepType(UrlFilterConfig, UrlFilter),
    "html_extract": StepType(HtmlExtractConfig, HtmlExtractor),
    "normalize": StepType(NormalizeConfig, lambda c: MapStep("normalize", Normalizer(c).normalize)),
    "langid": StepType(LangIdConfig, LanguageIdentifier),
    "gopher_quality": StepType(GopherQualityConfig, lambda c: FilterStep("gopher_quality",
                                                                         GopherQualityFilter(c).check)),
    "gopher_repetition": StepType(GopherRepetitionConfig, lambda c: FilterStep(
        "gopher_repetition", GopherRepetitionFilter(c).check)),
    "c4": StepType(C4Config, C4Filter),
    "fineweb": StepType(FineWebConfig, lambda c: FilterStep("fineweb", FineWebFilter(c).check)),
    "quality_classifier": StepType(QualityClassifierConfig, quality_step),
    "toxicity": StepType(ToxicityConfig, toxicity_step),
    "pii": StepType(PiiConfig, PiiMasker),
    "exact_dedup": StepType(ExactDedupConfig, ExactDedup, is_global=True),
    "minhash_dedup": StepType(MinHashConfig, MinHashDeduper, is_global=True),
    "perplexity": StepType(PerplexityConfig, PerplexityFilter, is_global=True),
}
PRESETS = ("default", "chinese")


def _as_tuples(value: Any) -> Any:
    """TOML arrays become tuples (nested too), as the frozen configs expect."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def make_config(step_type: str, params: dict[str, Any], preset: str = "default") -> Any:
    """The config dataclass of `step_type` with `params` applied over the preset (validated)."""
    if step_type not in STEP_TYPES:
        raise ConfigError(f"unknown step type {step_type!r}; allowed: {sorted(STEP_TYPES)}")
    cls = STEP_TYPES[step_type].config
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"step {step_type!r} has no parameter {unknown[0]!r}; allowed: {sorted(allowed)}")
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not allowed; use one of {PRESETS}")
    if preset == "chinese":
        if not hasattr(cls, "for_chinese"):
            raise ConfigError(f"step {step_type!r} has no 'chinese' preset")
        base = cls.for_chinese()
    else:
        base = cls()
    try:
        return dataclasses.replace(base, **{k: _as_tuples(v) for k, v in params.items()})
    except TypeError as err:
        raise ConfigError(f"bad parameter for step {step_type!r}: {err}") from err


def build_step(table: dict[str, Any]) -> tuple[str, Step | GlobalStep, bool]:
    """(name, step, is_global) from a TOML step table with `type`, optional `name` and `preset`."""
    table = dict(table)
    step_type = table.pop("type", None)
    if not isinstance(step_type, str):
        raise ConfigError(f"every step needs a 'type'; allowed: {sorted(STEP_TYPES)}")
    name = str(table.pop("name", step_type))
    preset = table.pop("preset", "default")
    config = make_config(step_type, table, preset)
    step = STEP_TYPES[step_type].build(config)
    step.name = name
    return name, step, STEP_TYPES[step_type].is_global
